"""Path-valued config keys: where the runner reads and writes inside the repository.

A path key is declared with `path_field()` in orchestrator_lib/config.py; every such key, present or
future, gets the same rules here: relative, strictly inside the repository once normalised,
not the repository itself, not `.git` or inside it, and no overlap with another path key or
the runner's state folder. A value such as `worktree_dir: "."` once made the leftovers repair
delete the whole checkout; these rules keep such a value from ever reaching a run.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator_lib.state import STATE_DIR  # the runner's own folder: no path key may overlap it

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GLOB = re.compile(r"[*?\[\]]")  # special in .git/info/exclude patterns, which name these folders
_DRIVE = re.compile(r"^[A-Za-z]:")


def path_field(default: str) -> Any:
    """A dataclass field holding a path relative to the repository root."""
    return dataclasses.field(default=default, metadata={"path": True})


def path_keys(config: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every path field of `config` and its sections."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("path"):
            yield f"{prefix}{f.name}", value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from path_keys(value, f"{prefix}{f.name}.")


def normalised(value: str) -> str:
    """The path with `/` separators, `.` and `..` folded, no trailing slash ('' for the root)."""
    folded = posixpath.normpath(value.replace("\\", "/"))
    return "" if folded == "." else folded


def value_problem(value: str) -> str | None:
    """Why `value` cannot be a path key, or None."""
    if not value.strip():
        return "must not be empty: name a folder or file inside the repository"
    if _CONTROL.search(value):
        return "must not hold control characters (a newline, a tab …)"
    if _GLOB.search(value):
        return "must not hold *, ?, [ or ] (the runner writes it into .git/info/exclude)"
    if value.startswith(("/", "\\", "~")) or _DRIVE.match(value):
        return 'must be relative to the repository root, e.g. "logs"'
    norm = normalised(value)
    if norm == "":
        return "must not be the repository root itself: name a folder inside it"
    if norm == ".." or norm.startswith("../"):
        return "must stay inside the repository (it leads out of it with ..)"
    if any(part.casefold() == ".git" for part in norm.split("/")):
        return "must not be .git or lie inside it (git's own data)"
    return None


def overlap_problems(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, message) for each key that is, contains or lies inside another path key or the state folder."""
    places = [(k, normalised(v).casefold()) for k, v in keys if value_problem(v) is None]
    places.append((STATE_DIR, STATE_DIR))
    problems = []
    for i, (key, path) in enumerate(places):
        for other, other_path in places[i + 1 :]:
            relation = _relation(path, other_path)
            if relation:
                subject = f"the runner's state folder {STATE_DIR}/" if other == STATE_DIR else f"`{other}`"
                problems.append((key, f"{relation} {subject}: give each path key its own place"))
    return problems


def _relation(a: str, b: str) -> str | None:
    if a == b:
        return "is the same place as"
    if b.startswith(a + "/"):
        return "contains"
    if a.startswith(b + "/"):
        return "lies inside"
    return None


def location_problem(root: Path, value: str) -> str | None:
    """After symlinks: the place must still be strictly inside `root` and outside its .git."""
    real_root = root.resolve()
    place = (root / normalised(value)).resolve()
    if place == real_root or not place.is_relative_to(real_root):
        return f"leads to {place} (through a symbolic link), not to a place inside the repository {real_root}"
    if place.relative_to(real_root).parts[0].casefold() == ".git":
        return f"leads into .git (through a symbolic link): {place}"
    return None

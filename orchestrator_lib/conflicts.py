"""Conflicts seen before they happen: merges predicted with `git merge-tree --write-tree` (git 2.38+).

Nothing here touches a worktree or a ref: the forecast writes only unreachable objects, so it is safe
to run beside the user's checkout, a running merge, or `plan`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib import git
from orchestrator_lib.errors import UsageError

MINIMUM = (2, 38)


def git_problem(version_text: str) -> str | None:
    """Why this git cannot predict merges (`merge-tree --write-tree` came in 2.38), or None."""
    found = re.search(r"(\d+)\.(\d+)", version_text)
    have = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if have >= MINIMUM:
        return None
    shown = f"{have[0]}.{have[1]}" if found else repr(version_text)
    return (
        f'git {shown} cannot predict merge conflicts: `schedule: "dependencies"` needs git 2.38 or newer '
        "(git merge-tree --write-tree); upgrade git, or use `--schedule stages`"
    )


def require_git(root: Path, read_version: Callable[[Path], str] = git.version) -> None:
    """UsageError (exit 2, nothing started) when the installed git is too old for the merge queue."""
    problem = git_problem(read_version(root))
    if problem:
        raise UsageError(problem)


def can_predict(root: Path, read_version: Callable[[Path], str] = git.version) -> bool:
    return git_problem(read_version(root)) is None


def predict(root: Path, base: str, branch: str) -> tuple[str, ...]:
    """The files merging `branch` into `base` would conflict in; () when it merges cleanly."""
    return git.merge_tree(root, base, branch).conflicted


class Conflict(NamedTuple):
    """A merge the queue predicted would conflict: the branch's own session merges the new base first."""

    files: tuple[str, ...]
    base_branch: str


class Forecast(NamedTuple):
    order: tuple[str, ...]  # milestone ids: those that merge cleanly first, in id order
    conflicts: dict[str, tuple[str, ...]]  # id -> the files it would conflict in, merged in `order`


def forecast(root: Path, base: str, branches: Sequence[tuple[str, str]]) -> Forecast:
    """Merge (id, branch) pairs one after another, each into the result so far, without a worktree.

    Greedy: the lowest id that merges cleanly goes next; when none does, the rest follow in id order,
    each named with the files it would conflict in (against the clean merges before it)."""
    head, left = base, sorted(branches)
    order: list[str] = []
    while left:
        clean = next(((mid, b, p) for mid, b in left if not (p := git.merge_tree(root, head, b)).conflicted), None)
        if clean is None:
            break
        mid, branch, preview = clean
        head = git.commit_tree(root, preview.tree, [head, branch], f"forecast: {mid}")
        order.append(mid)
        left = [(i, b) for i, b in left if i != mid]
    conflicts = {mid: git.merge_tree(root, head, branch).conflicted for mid, branch in left}
    return Forecast((*order, *(mid for mid, _ in left)), conflicts)

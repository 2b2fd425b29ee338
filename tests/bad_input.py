"""Helpers of the adversarial tests: a fingerprint of everything a run could write, and a way to
make a path unwritable even for root (whose permission bits are not enforced)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# What a run writes in .git: its refs, worktree records, config, HEAD and the exclude list.
GIT_WATCHED = ("HEAD", "config", "packed-refs", "refs", "info", "worktrees", "logs/HEAD")


def fingerprint(root: Path) -> dict[str, str]:
    """Every path under the checkout (files hashed, folders listed) and git's refs, exclude list and
    worktree records: equal before and after means the command wrote nothing."""
    seen: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            continue
        seen[rel] = _digest(path)
    git_dir = root / ".git"
    for name in GIT_WATCHED:
        target = git_dir / name
        found = sorted(target.rglob("*")) if target.is_dir() else [target]
        for path in found:
            if path.exists() or path.is_symlink():
                seen[".git/" + path.relative_to(git_dir).as_posix()] = _digest(path)
    return seen


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if path.is_dir():
        return "dir"
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """`path` cannot be written: `chattr +i` when running as root, else the permission bits."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(stat.S_IMODE(mode) & ~0o222)
        try:
            yield
        finally:
            path.chmod(stat.S_IMODE(mode))
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: nothing can be made unwritable")
    made = subprocess.run(("chattr", "+i", str(path)), capture_output=True)
    if made.returncode:
        pytest.skip(f"chattr +i is not allowed here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(("chattr", "-i", str(path)), check=True)

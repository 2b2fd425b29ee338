"""What a runner killed together with its git commands leaves in git, repaired at the next start.

A `kill -9` of the runner alone lets its git children finish. When they die too (a container
stopped, `kill -9 -<group>`), git can leave a worktree half made (locked "initializing", without
its `.git` file, or an empty folder) and lock files (`index.lock`, `<ref>.lock`) that make every
later git command there fail. Half-made worktrees held no agent work yet (agents start after the
worktree is made): they are removed and made again. A lock file is stale when it is a moment old
and no git process is running in the repository. Nothing is touched while a git process still
works there (a killed runner's last ones finish on their own); each repair prints a notice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from orchestrator_lib import git, safe_delete

LOCK_MIN_AGE = 2.0  # seconds: a lock younger than this may belong to a git that is starting
SETTLE_TIMEOUT = 10.0


def repair(
    root: Path, folder: Path, sleep: Callable[[float], None] = time.sleep, settle: float = SETTLE_TIMEOUT
) -> list[str]:
    """Stale locks, half-made worktrees under `folder` and empty folders there; returns notices."""
    locks = {p: m for p in _lock_files(root, folder) if (m := _mtime(p)) != float("inf")}
    half_made = [wt for wt in git.worktrees(root) if _inside(wt.path, folder) and _half_made(wt)]
    if not locks and not half_made and not _empty_folders(root, folder):
        return []
    if locks:
        sleep(min(LOCK_MIN_AGE, max(0.0, LOCK_MIN_AGE - (time.time() - max(locks.values())))))
    if not _git_settled([root, folder], settle):
        return []
    notes = []
    for path, mtime in locks.items():
        if _mtime(path) == mtime:  # not taken again meanwhile
            path.unlink(missing_ok=True)
            notes.append(f"removed the stale git lock {path} (left by a git command that was killed)")
    for wt in half_made:
        safe_delete.force_remove_worktree(root, wt.path, allowed_under=folder)
        notes.append(f"removed the half-made worktree {wt.path} (it is made again)")
    git.prune_worktrees(root)
    for path in _empty_folders(root, folder):
        safe_delete.remove_empty_dir(path, root=root, allowed_under=folder)
        notes.append(f"removed the empty folder {path} (a worktree that was never made)")
    return notes


def _half_made(wt: git.Worktree) -> bool:
    return wt.locked == "initializing" or (wt.path.exists() and _git_dir(wt.path) is None)


def _empty_folders(root: Path, folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    registered = {wt.path.resolve() for wt in git.worktrees(root)}
    folders = [p for p in sorted(folder.iterdir()) if p.is_dir() and p.resolve() not in registered]
    return [p for p in folders if not any(p.iterdir())]


def _lock_files(root: Path, folder: Path) -> list[Path]:
    """Locks of our worktrees, our branches, packed refs and the checkout's index."""
    common = git.git_common_dir(root)
    dirs = [common] + [_git_dir(wt.path) for wt in git.worktrees(root) if _inside(wt.path, folder)]
    locks = [d / name for d in dirs if d is not None for name in ("index.lock", "HEAD.lock")]
    locks.append(common / "packed-refs.lock")
    for group in ("milestone", "orchestrator"):
        locks += (common / "refs" / "heads" / group).rglob("*.lock")
    return [p for p in locks if p.is_file()]


def _git_dir(worktree: Path) -> Path | None:
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except OSError:
        return None
    return Path(text.removeprefix("gitdir:").strip()) if text.startswith("gitdir:") else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def _git_settled(places: Iterable[Path], timeout: float) -> bool:
    """Wait (bounded) until no git process works in `places`."""
    folders = [str(p.resolve()) for p in places]
    deadline = time.monotonic() + timeout
    while _git_running(folders):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _git_running(folders: list[str]) -> bool:
    import psutil

    for p in psutil.process_iter(["name", "cwd"]):
        name, cwd = p.info.get("name") or "", p.info.get("cwd") or ""
        if name.startswith("git") and p.pid != os.getpid() and any(_within(cwd, f) for f in folders):
            return True
    return False


def _inside(path: Path, folder: Path) -> bool:
    return _within(str(path.resolve()), str(folder.resolve()))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

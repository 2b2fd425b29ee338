"""What a runner killed together with its git commands leaves in git, repaired at the next start.

A `kill -9` of the runner alone lets its git children finish. When they die too (a container
stopped, `kill -9 -<group>`), git can leave a worktree half made (locked "initializing", or
without its `.git` file) and lock files (`index.lock`, `<ref>.lock`) that make every later git
command there fail. Half-made worktrees held no agent work yet (agents start after the worktree
is made): they are removed and made again. A lock file is stale when it is a moment old and no
git process is running in the repository; stale ones are removed, each with a notice.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ccorch import git

LOCK_MIN_AGE = 2.0  # seconds: a lock younger than this may belong to a git that is starting
SETTLE_TIMEOUT = 10.0


def repair_worktrees(root: Path, folder: Path) -> list[str]:
    """Remove worktrees under `folder` that `git worktree add` never finished; returns notices."""
    notes: list[str] = []
    for wt in git.worktrees(root):
        half_made = wt.locked == "initializing" or (wt.path.exists() and not (wt.path / ".git").exists())
        if not half_made or not _inside(wt.path, folder):
            continue
        if (wt.path / ".git").exists():
            git.git(root, "worktree", "remove", "--force", "--force", str(wt.path))
        else:
            git.git(root, "worktree", "unlock", str(wt.path), check=False)
            shutil.rmtree(wt.path, ignore_errors=True)
            git.prune_worktrees(root)
        notes.append(f"removed the half-made worktree {wt.path} (it is made again)")
    return notes


def remove_stale_locks(
    root: Path, folder: Path, sleep: Callable[[float], None] = time.sleep, settle: float = SETTLE_TIMEOUT
) -> list[str]:
    """Lock files of our worktrees, our branches, packed refs and the checkout's index that no git holds."""
    seen = {p: _mtime(p) for p in _lock_files(root, folder)}
    seen = {p: mtime for p, mtime in seen.items() if mtime != float("inf")}  # gone meanwhile: not stale
    if not seen:
        return []
    sleep(min(LOCK_MIN_AGE, max(0.0, LOCK_MIN_AGE - (time.time() - max(seen.values())))))
    if not _git_settled([root, folder], settle):
        return []
    notes = []
    for path, mtime in seen.items():
        if _mtime(path) == mtime:  # not taken again meanwhile
            path.unlink(missing_ok=True)
            notes.append(f"removed the stale git lock {path} (left by a git command that was killed)")
    return notes


def _lock_files(root: Path, folder: Path) -> list[Path]:
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
    """Wait (bounded) until no git process works in `places`: a killed runner's last ones finish."""
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

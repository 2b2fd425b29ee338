"""Agents a dead runner left behind: found at resume and stopped before their worktrees are reused.

An agent is found by the pid and start time recorded in the state (a recycled pid has another
start time and is left alone) or, when the runner died before it could record them, by the
`ORCHESTRATOR_WORKTREE` every agent gets in its environment, pointing into our worktree folder.
Whatever it wrote stays in the worktree for the next attempt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib import proc


class Orphan(NamedTuple):
    milestone: str
    pid: int  # the leader of its process group


class Recorded(NamedTuple):
    milestone: str
    pid: int
    started: float  # the process's create time, as psutil reports it


def find(recorded: Iterable[Recorded], worktree_dir: Path) -> list[Orphan]:
    found = {r.pid: Orphan(r.milestone, r.pid) for r in recorded if r.pid and _same_process(r.pid, r.started)}
    for orphan in _by_environment(worktree_dir):
        found.setdefault(orphan.pid, orphan)
    return list(found.values())


def stop(orphan: Orphan, grace: float = 5.0) -> None:
    """Its whole process group: SIGTERM, `grace` seconds, then SIGKILL."""
    proc.kill_pid_group(orphan.pid, grace=grace)


def _same_process(pid: int, started: float) -> bool:
    import psutil

    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and abs(p.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _by_environment(worktree_dir: Path) -> list[Orphan]:
    import psutil

    folder = str(worktree_dir.resolve())
    own_group = _group_of(os.getpid())
    found: list[Orphan] = []
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue  # gone, a zombie, or another user's: not ours
        worktree = env.get("ORCHESTRATOR_WORKTREE", "")
        if p.pid == os.getpid() or not _inside(worktree, folder):
            continue
        group = _group_of(p.pid)
        if group and group != own_group:
            found.append(Orphan(env.get("ORCHESTRATOR_MILESTONE", "?"), group))
    return found


def _inside(path: str, folder: str) -> bool:
    return bool(path) and os.path.normpath(path).startswith(folder + os.sep)


def _group_of(pid: int) -> int:
    if not hasattr(os, "getpgid"):
        return pid  # Windows: agents run in their own process group, led by the agent
    try:
        return os.getpgid(pid)
    except OSError:
        return 0

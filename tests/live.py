"""Helpers for tests that watch a run while it goes: a background runner and bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from conftest import ORCHESTRATOR, Project

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 30, every: float = 0.1) -> T:
    """Poll until `probe` returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def start(root: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[str]:
    """orchestrator.py as a background process; its output goes to `log` (read it with `output`)."""
    out = open(log or root.parent / "runner-output.txt", "w")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(
        (sys.executable, str(ORCHESTRATOR), *args),
        cwd=root,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def output(root: Path) -> str:
    path = root.parent / "runner-output.txt"
    return path.read_text() if path.exists() else ""


@contextmanager
def running(project: Project, *args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A runner that is always gone after the block: SIGTERM, then SIGKILL if it lingers."""
    runner = start(project.root, *args, env=env)
    try:
        yield runner
    finally:
        if runner.poll() is None:
            runner.terminate()
            try:
                runner.wait(timeout=20)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait(timeout=10)
        for call in project.agent_calls():  # a failed test must not leave agents behind
            if call["event"] == "start" and alive(int(call["pid"])):
                try:
                    os.killpg(int(call["pid"]), signal.SIGKILL)
                except OSError:
                    pass


def milestone(project: Project, mid: str) -> dict[str, object]:
    return next(m for m in project.status_json()["milestones"] if m["id"] == mid)


def agent_started(project: Project, mid: str, role: str = "implement") -> list[dict[str, object]]:
    return [c for c in project.agent_calls() if c["milestone"] == mid and c["role"] == role and c["event"] == "start"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False

"""One runner per project: a lock file naming its holder (pid, host, start time)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ccorch.errors import UsageError


class RunLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self.notice = ""

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(_me(), f)
            return
        raise UsageError(f"could not take the lock {self.path}; remove it if no orchestrator is running")

    def _handle_existing(self) -> None:
        holder = read_holder(self.path)
        if holder is not None and holder_alive(holder):
            raise UsageError(
                f"another orchestrator is running in this project (pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {time.ctime(float(holder.get('started', 0)))}); "
                "wait for it, or stop it with `python orchestrator.py stop`"
            )
        self.notice = f"took over a stale lock left by pid {holder.get('pid') if holder else '?'} (no longer running)"
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        holder = read_holder(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "create_time": _create_time(os.getpid()),
    }


def read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable or half-written (a kill during the write): treat as stale
    return data if isinstance(data, dict) else None


def holder_alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot check another machine's processes: assume it is running
    pid = int(holder.get("pid", 0))
    created = _create_time(pid)
    # A recycled pid has a different start time than the one recorded.
    return created > 0 and abs(created - float(holder.get("create_time", created))) < 1.0


def _create_time(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        return 0.0 if proc.status() == psutil.STATUS_ZOMBIE else float(proc.create_time())
    except psutil.Error:
        return 0.0

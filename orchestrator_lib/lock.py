"""One runner per project: a lock file naming its holder (pid, host, start time).

The file is held with an OS lock (flock; a byte-range lock on Windows) for the whole run. The
OS drops it when the holder dies, even by `kill -9`, so a lock left by a dead runner is taken
over, and two runners starting at once cannot both take over the same stale lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator_lib import files
from orchestrator_lib.errors import UsageError

_WINDOWS_LOCK_OFFSET = 1 << 20  # lock a byte past the JSON, so others can still read who holds it


class RunLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self.notice = ""
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def acquire(self) -> None:
        files.private_dir(self.path.parent)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _try_lock(fd):
                os.close(fd)
                raise UsageError(_held_message(self.path, read_holder(self.path)))
            if _is_current(fd, self.path):
                self._take(fd)
                return
            os.close(fd)  # the holder removed the file as we opened it: open the new one
        raise UsageError(f"could not take the lock {self.path}; remove it if no orchestrator is running")

    def _take(self, fd: int) -> None:
        previous = _read_fd(fd)
        if previous and previous.get("host") not in (None, socket.gethostname()):
            os.close(fd)  # a runner on another machine sharing this folder: its pid cannot be checked here
            raise UsageError(_held_message(self.path, previous) + f"; if it is not running, delete {self.path}")
        if previous is not None:
            self.notice = f"took over a stale lock left by pid {previous.get('pid', '?')} (no longer running)"
        data = json.dumps(_me()).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if sys.platform == "win32":
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
        else:
            self.path.unlink(missing_ok=True)  # still held: nobody can take this file meanwhile
            os.close(self._fd)
        self._fd = None


def _held_message(path: Path, holder: dict[str, Any] | None) -> str:
    who = "another orchestrator is running in this project"
    if holder:
        since = time.ctime(float(holder.get("started", 0)))
        who += f" (pid {holder.get('pid')} on {holder.get('host')}, since {since})"
    return f"{who}; wait for it, or stop it with `python orchestrator.py stop`"


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read_fd(fd: int) -> dict[str, Any] | None:
    """The previous holder's record; {} when the file holds something unreadable, None when empty."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 64 * 1024)
    if not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {}  # half-written by a runner killed while taking the lock
    return data if isinstance(data, dict) else {}


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

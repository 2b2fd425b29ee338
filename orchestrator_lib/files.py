"""Folders and files only the user may read: the state and the logs hold agent transcripts."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

_umask: list[int] = []
_lock = threading.Lock()


def umask() -> int:
    """The process's umask, read once (reading it means setting it, so never while threads write files)."""
    with _lock:
        if not _umask:
            current = os.umask(0o077)
            os.umask(current)
            _umask.append(current)
        return _umask[0]


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700; an existing folder is tightened too."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        os.chmod(path, 0o700)
    return path


def open_private(path: Path, mode: str = "a", encoding: str | None = "utf-8") -> IO[Any]:
    """Open for writing a file that is created 0600 (its folder made private first)."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)


def make_private(path: Path) -> None:
    """0600 for a file something else created (SQLite's database, a FileHandler's log)."""
    if os.name == "posix" and path.exists():
        os.chmod(path, 0o600)

"""The user's own uncommitted work in the main checkout, to prove a run never touches it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

# Awkward on purpose: CRLF, no final newline, non-ASCII, bytes that are not UTF-8.
TRACKED_EDIT = "my edit\r\nnot committed · ünïcode\r\nno newline at the end".encode()
UNTRACKED = {
    "notes/ideas.md": b"- an idea I have not committed\n",
    "scratch.bin": bytes(range(256)) * 4,
}


class UserEdits:
    """Create after the plan is committed; `assert_intact()` after every run.

    A modified tracked file, untracked files and (with `staged`) a new file staged in the index.
    """

    def __init__(self, root: Path, tracked: str = "notes.txt", staged: bool = True) -> None:
        self.root = root
        self.tracked = tracked
        self.staged = ["staged.txt"] if staged else []
        (root / tracked).write_text("committed version\n")
        _git(root, "add", tracked)
        _git(root, "commit", "-q", "-m", f"Add {tracked}")
        (root / tracked).write_bytes(TRACKED_EDIT)
        for rel, data in UNTRACKED.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        for rel in self.staged:
            (root / rel).write_bytes(b"staged, not committed\n")
            _git(root, "add", rel)
        self.hashes = self._hashes()
        self.status = self._status()

    def _paths(self) -> list[str]:
        return [self.tracked, *UNTRACKED, *self.staged]

    def _hashes(self) -> dict[str, str]:
        paths = self._paths()
        return {p: hashlib.sha256((self.root / p).read_bytes()).hexdigest() for p in paths}

    def _status(self) -> set[str]:
        paths = self._paths()
        out = _git(self.root, "status", "--porcelain", "--untracked-files=all", "--", *paths)
        return set(out.splitlines())

    def assert_intact(self) -> None:
        assert self._hashes() == self.hashes, "the user's uncommitted files changed"
        assert self._status() == self.status, "the user's uncommitted files changed state in git"
        committed = _git(self.root, "show", f"HEAD:{self.tracked}")
        assert committed == "committed version\n", "the user's edit was committed"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(("git", *args), cwd=root, check=True, capture_output=True, text=True).stdout

"""The redactor every command starts with: the environment plus `.env` at the repository's root."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ccorch import redact
from ccorch.errors import UsageError


def read_dotenv(root: Path) -> dict[str, str]:
    """The `.env` values the agents get; UsageError naming the line that does not load."""
    from ccorch import preflight

    return preflight.read_env(root)


def redactor_for(start: Path) -> redact.Redactor:
    """The redactor of the repository holding `start`, before anything else is read.

    Quiet and forgiving: a `.env` with a line that does not load still has its other values
    masked; reporting the bad line (exit 2) is the preflight's job, after this.
    """
    start = start.resolve()
    # The nearest folder with a .git (folder or worktree file): no git process for this.
    root = next((p for p in (start, *start.parents) if (p / ".git").exists()), start)
    return redact.Redactor.from_environment(os.environ, _dotenv_values(root))


def _dotenv_values(root: Path) -> dict[str, str]:
    try:
        return read_dotenv(root)  # exactly the values the agents get
    except UsageError:
        return _loadable_lines(root / ".env")


def _loadable_lines(path: Path) -> dict[str, str]:
    from dotenv.parser import parse_stream

    try:
        text = path.read_bytes().decode("utf-8-sig", "replace")
    except OSError:
        return {}
    return {b.key: b.value for b in parse_stream(io.StringIO(text)) if b.key and b.value is not None and not b.error}

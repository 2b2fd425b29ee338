"""Where the secrets come from: `.env` at the repository's root and the environment."""

from __future__ import annotations

import os
from pathlib import Path

from ccorch import redact


def read_dotenv(root: Path) -> dict[str, str]:
    """The values of `root/.env` (none when there is no such file)."""
    from dotenv import dotenv_values

    path = root / ".env"
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def redactor_for(start: Path) -> redact.Redactor:
    """The redactor of the repository holding `start`, before anything else is read.

    Best effort: a `.env` that cannot be read masks nothing here; loading the project reports it.
    """
    start = start.resolve()
    # The nearest folder with a .git (folder or worktree file): no git process for this.
    root = next((p for p in (start, *start.parents) if (p / ".git").exists()), start)
    try:
        dotenv = read_dotenv(root)
    except (OSError, ValueError):
        dotenv = {}
    return redact.Redactor.from_environment(os.environ, dotenv)

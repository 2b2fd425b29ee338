"""The redactor every command starts with: the environment plus `.env` at the repository's root."""

from __future__ import annotations

import io
import os
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from orchestrator_lib import redact
from orchestrator_lib.errors import UsageError

ENV_FILE = ".env"


def read_dotenv(root: Path) -> dict[str, str]:
    """The `.env` values the agents get, or UsageError naming `.env` and the line that would not load.

    python-dotenv skips a line it cannot parse with a log message nobody reads; a key that
    silently fails to load becomes an authentication failure hours later."""
    path = root / ENV_FILE
    if not path.exists() and not path.is_symlink():
        return {}
    text = _env_text(path)
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise UsageError(
                f"{ENV_FILE}:{binding.original.line}: cannot read this line{_line_hint(binding.original.string)}: "
                "write NAME=value, "
                "quote a value holding spaces or #, or start the line with # to make it a comment"
            )
    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    for key, value in values.items():
        if "\x00" in key + value:  # the agent could not be started with it in its environment
            raise UsageError(f"{ENV_FILE}: the value of {key} holds a NUL character: remove it")
    return values


def _line_hint(line: str) -> str:
    """Which line, without its value: a bad line may well be a secret pasted on its own."""
    name, sep, _ = line.strip().partition("=")
    return f" (setting {name.strip()[:40]!r})" if sep and name.strip().isidentifier() else ""


def _env_text(path: Path) -> str:
    if path.is_dir():
        raise UsageError(f"{ENV_FILE} is a directory: the runner reads NAME=value lines from a file there")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {ENV_FILE}: {e.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UsageError(f"{ENV_FILE}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}): save it as UTF-8") from None


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
    try:
        text = path.read_bytes().decode("utf-8-sig", "replace")
    except OSError:
        return {}
    return {b.key: b.value for b in parse_stream(io.StringIO(text)) if b.key and b.value is not None and not b.error}

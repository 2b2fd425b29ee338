"""Fixtures and helpers for driving the real Claude Code CLI against FakeAnthropic.

tests/conftest.py wires them in with `from claude_support import *`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic

__all__ = [
    "CLAUDE_ARGS",
    "claude_cli",
    "fake_anthropic_server",
    "find_claude_cli",
    "run_claude",
    "start_claude",
    "stop_claude",
    "stream_events",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CLAUDE_VERSION = "2.1.197"
CLAUDE_ARGS = (
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",  # stream-json requires it
    "--dangerously-skip-permissions",
)
_KILL_WAIT = 5.0


def find_claude_cli() -> str | None:
    """$CLAUDE_CLI, else the CI install under .tools/claude, else `claude` on PATH."""
    if from_env := os.environ.get("CLAUDE_CLI"):
        return from_env
    local = REPO_ROOT / ".tools" / "claude" / "node_modules" / ".bin" / "claude"
    if local.is_file():
        return str(local)
    return shutil.which("claude")


@pytest.fixture(scope="session")
def claude_cli() -> str:
    """Path of the real CLI; skips when absent, but fails in CI, where it must run."""
    cli = find_claude_cli()
    if cli is not None and Path(cli).is_file():
        return cli
    where = f"CLAUDE_CLI={cli} is not a file" if cli else "Claude Code CLI not found"
    reason = (
        f"{where}; install it: npm install --prefix .tools/claude "
        f"@anthropic-ai/claude-code@{CLAUDE_VERSION}, or set CLAUDE_CLI"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(name="fake_anthropic")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    """A fresh fake Messages API for one test, stopped (bounded) afterwards."""
    with FakeAnthropic() as server:
        yield server


def start_claude(
    cli: str,
    cwd: Path,
    env: dict[str, str],
    prompt: str,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Launch `claude -p` (stream-json) in its own process group, prompt on stdin."""
    with tempfile.TemporaryFile() as stdin:  # a file: writing a prompt never blocks
        stdin.write(prompt.encode())
        stdin.seek(0)
        return subprocess.Popen(
            (cli, *CLAUDE_ARGS, *extra_args),
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


def stop_claude(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Kill the CLI's whole process group; return what it printed (stdout, stderr)."""
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:  # pragma: no cover - Windows has no process groups
        proc.kill()
    return _collect(proc, _KILL_WAIT)


def run_claude(
    cli: str,
    cwd: Path,
    env: dict[str, str],
    prompt: str,
    extra_args: Sequence[str] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `claude -p` to completion; on `timeout` kill its group and raise."""
    proc = start_claude(cli, cwd, env, prompt, extra_args)
    try:
        stdout, stderr = _collect(proc, timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = stop_claude(proc)
        raise subprocess.TimeoutExpired(proc.args, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def stream_events(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects of a stream-json transcript, one a line."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _collect(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return stdout, stderr

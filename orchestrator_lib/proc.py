"""The one way this project starts processes: argv tuples, explicit cwd, env and timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib.errors import OrchestratorError

IS_WINDOWS = sys.platform == "win32"


class Output(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class CalledProcessError(OrchestratorError):
    def __init__(self, argv: Sequence[str], cwd: Path, returncode: int | None, out: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = out
        how = "timed out" if returncode is None else f"exit {returncode}"
        tail = "\n".join(out.strip().splitlines()[-15:])
        super().__init__(f"command `{' '.join(argv)}` failed ({how}) in {cwd}" + (f":\n{tail}" if tail else ""))


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
    stdin: str | None = None,
) -> Output:
    """Run to completion and capture output; raise CalledProcessError when check fails."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        out = _text(e.stdout) + _text(e.stderr)
        raise CalledProcessError(argv, cwd, None, out) from None
    except FileNotFoundError:
        raise OrchestratorError(f"command not found: {argv[0]} (needed to run `{' '.join(argv)}`)") from None
    if check and done.returncode != 0:
        raise CalledProcessError(argv, cwd, done.returncode, done.stdout + done.stderr)
    return Output(done.returncode, done.stdout, done.stderr)


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def run_shell_check(command: str, *, cwd: Path, env: Mapping[str, str], timeout: float) -> Output:
    """A user-written check from a milestone file: the user chose a shell, so give them one."""
    argv = ["cmd", "/c", command] if IS_WINDOWS else ["sh", "-c", command]
    try:
        return run(argv, cwd=cwd, env=env, timeout=timeout, check=False)
    except CalledProcessError as e:
        return Output(124, e.output, f"check timed out after {timeout:.0f}s")


def run_group(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float, stop: threading.Event | None = None
) -> Output:
    """Run to completion in its own process group, output merged into stdout.

    On timeout or `stop` the whole tree is killed (returncode 124, like `timeout`): an
    installer's children must not outlive it, nor hold the pipe open. A missing program is 127.
    """
    try:
        process = popen_group(argv, cwd=cwd, env=env)
    except OSError as e:
        return Output(127, "", f"cannot start {argv[0]}: {e.strerror or e}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, _ = process.communicate(input=b"", timeout=0.5)
            return Output(process.returncode, _text(out), "")
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline and not (stop and stop.is_set()):
                continue
        kill_group(process, grace=2)
        out, _ = process.communicate()
        why = "stopped" if stop and stop.is_set() else f"timed out after {timeout:.0f}s"
        return Output(124, _text(out), why)


def popen_group(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a process in its own process group, so a stop can kill the whole tree."""
    return _popen_in_own_group(argv, cwd, env, detached=False)


def popen_detached(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own with no pipes to us: it lives on when we die."""
    return _popen_in_own_group(argv, cwd, env, detached=True)


def _popen_in_own_group(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], *, detached: bool
) -> subprocess.Popen[bytes]:
    kwargs: dict[str, object] = {}
    if IS_WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        kwargs["creationflags"] = flags | (subprocess.DETACHED_PROCESS if detached else 0)  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    pipe = subprocess.DEVNULL if detached else subprocess.PIPE
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=pipe,
        stdout=pipe,
        stderr=subprocess.DEVNULL if detached else subprocess.STDOUT,
        **kwargs,
    )


def kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the group, wait up to `grace`, then SIGKILL whatever is left."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children may outlive the leader; the group id stays valid while any member lives.
    _signal_group(proc.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    proc.wait()


def kill_pid_group(pid: int, grace: float = 5.0) -> None:
    """Stop a process group we did not start in this process (an orphan of an earlier run)."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    _signal_group(pid, getattr(signal, "SIGKILL", signal.SIGTERM))


def _signal_group(pid: int, sig: int) -> None:
    try:
        if IS_WINDOWS:
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

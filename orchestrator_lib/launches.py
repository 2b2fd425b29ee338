"""Agent launches on disk: what the runner started, and how each agent ended.

For every agent it starts, the runner writes a launch file under `.orchestrator/agents/`
(`<ID>-<role>-<round>.json`), then starts `python -m orchestrator_lib.agent_wrapper <launch file>` in a
session of its own. The wrapper starts the agent, writes its output to the milestone's log and
keeps a status file next to the launch file (`<ID>-<role>-<round>.status.json`): the agent's pid
and start time once it runs, its exit code and where its output ends in the log once it is done.
Neither needs the runner alive, so a runner that dies and comes back finds each agent of the dead
run still running (adopt it), finished (use its result) or gone (start a new attempt).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_lib import files, proc

AGENTS_DIR = "agents"
WRAPPER_MODULE = "orchestrator_lib.agent_wrapper"
THIS_RUNNER = f"{os.getpid()}-{secrets.token_hex(6)}"
_SETTLE_S = 10.0  # how long a wrapper that runs but has not written its status yet gets


class Launch(NamedTuple):
    id: str  # unique per start: a status file of an earlier start is never taken for this one
    milestone: str
    role: str
    round: int
    argv: tuple[str, ...]
    cwd: str
    stdin: str  # the prompt file the agent reads as its standard input
    log: str
    log_start: int  # the agent's output starts here in the log
    dotenv: str  # the wrapper masks these values (and secret-named variables) in the log
    session_id: str
    launched_at: float  # epoch seconds
    runner: str  # THIS_RUNNER of the runner that made it: a runner never adopts its own launches


class Status(NamedTuple):
    launch: str
    wrapper_pid: int
    agent_pid: int
    agent_started: float  # the agent process's create time (psutil), when known
    started: float  # epoch seconds
    finished: bool = False
    exit_code: int | None = None  # None: ended by a signal, or could not start
    signal: int = 0
    ended: float = 0.0
    log_end: int = 0
    error: str = ""  # the agent could not be started


# Roles whose agent a restarted runner never takes over: a resolver's merge and an update's merge of
# the base are redone, not resumed (their merge in progress is gone with the runner).
NOT_ADOPTED = ("resolve", "update")


def key(milestone: str, role: str, round_no: int) -> str:
    return f"{milestone}-{role}-{round_no}"


def launch_file(folder: Path, milestone: str, role: str, round_no: int) -> Path:
    return folder / f"{key(milestone, role, round_no)}.json"


def status_file(launch_path: Path) -> Path:
    return launch_path.with_name(launch_path.name.removesuffix(".json") + ".status.json")


def new_id() -> str:
    return f"{int(time.time())}-{secrets.token_hex(4)}"


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Temp file in the same folder + os.replace: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with files.open_private(tmp, "w") as f:  # 0600 in a 0700 folder: state is the user's only
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def record(path: Path, launch: Launch) -> None:
    """Before the start: a status file left by an earlier start under this name goes first."""
    status_file(path).unlink(missing_ok=True)
    write_atomic(path, {**launch._asdict(), "argv": list(launch.argv)})


def used_file(launch_path: Path) -> Path:
    return launch_path.with_name(launch_path.name.removesuffix(".json") + ".used")


def mark_used(launch_path: Path, launch_id: str) -> None:
    """The runner acted on this launch's result (a pause, a failure counted): never again."""
    with files.open_private(used_file(launch_path), "w") as f:
        f.write(launch_id)


def was_used(launch_path: Path, launch: Launch) -> bool:
    try:
        return used_file(launch_path).read_text(encoding="utf-8") == launch.id
    except OSError:
        return False


def read_launch(path: Path) -> Launch | None:
    data = _read_json(path)
    if data is None:
        return None
    try:
        return Launch(**{**data, "argv": tuple(data["argv"])})
    except TypeError:
        return None  # written by another version: not ours to adopt


def read_status(launch_path: Path, launch: Launch) -> Status | None:
    data = _read_json(status_file(launch_path))
    if data is None or data.get("launch") != launch.id:
        return None
    try:
        return Status(**data)
    except TypeError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def spawn(launch_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The wrapper, in a session of its own: a runner that dies (or its whole group) leaves it running."""
    argv = (sys.executable, "-m", WRAPPER_MODULE, str(launch_path))
    return proc.popen_detached(argv, cwd=Path(__file__).resolve().parent.parent, env=env)


def wrapper_running(launch_path: Path, launch: Launch) -> int:
    """The pid of the wrapper of this launch when it still runs (found by its command line), else 0."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info.get("cmdline") or []
        if WRAPPER_MODULE in cmdline and str(launch_path) in cmdline and _is_alive(p):
            return int(p.pid)
    return 0


def _is_alive(p: Any) -> bool:
    import psutil

    try:
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def settle(launch_path: Path, launch: Launch) -> Status | None:
    """The status of a launch of a dead runner; waits a little for a wrapper that is just starting."""
    deadline = time.monotonic() + _SETTLE_S
    while True:
        status = read_status(launch_path, launch)
        if status is not None or not wrapper_running(launch_path, launch) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def is_running(status: Status) -> bool:
    """The wrapper of a launch that has not finished still runs (same pid, same agent)."""
    return not status.finished and proc.pid_alive(status.wrapper_pid)


def kill(status: Status | None, wrapper: int, grace: float = 5.0) -> None:
    """Stop an agent: its wrapper (which then writes no exit status) and the agent's whole group."""
    if wrapper:
        _signal(wrapper, signal.SIGTERM)
    if status is not None and status.agent_pid:
        proc.kill_pid_group(status.agent_pid, grace=grace)
    deadline = time.monotonic() + 1.0  # it writes the agent's last output to the log, then exits
    while wrapper and time.monotonic() < deadline and proc.pid_alive(wrapper):
        time.sleep(0.05)
    if wrapper:
        _signal(wrapper, getattr(signal, "SIGKILL", signal.SIGTERM))


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def clear(folder: Path, milestone: str) -> None:
    """Forget the launches of a milestone (merged: nothing of it runs again)."""
    for path, launch in all_launches(folder):
        if launch.milestone == milestone:
            status_file(path).unlink(missing_ok=True)
            used_file(path).unlink(missing_ok=True)
            path.with_suffix(".prompt").unlink(missing_ok=True)
            path.unlink(missing_ok=True)


def all_launches(folder: Path) -> list[tuple[Path, Launch]]:
    found = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        if path.name.endswith(".status.json"):
            continue
        launch = read_launch(path)
        if launch is not None:
            found.append((path, launch))
    return found

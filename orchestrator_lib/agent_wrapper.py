"""The small process between the runner and an agent, so the agent outlives a runner that dies.

`python -m orchestrator_lib.agent_wrapper <launch file>` (orchestrator_lib.launches writes the file and starts this
in a session of its own). It starts the agent in a session of its own too, with the prompt file as
its standard input, writes the agent's output to the milestone's log with secrets masked, and when
the agent ends writes the exit status atomically next to the launch file. The runner follows the
log and waits for that status; nothing here needs the runner alive.

A SIGTERM (a stop, a watchdog) is passed on to the agent's group, and then no exit status is
written: a stopped agent did not finish, and a resumed runner starts a new attempt for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from orchestrator_lib import envfile, launches, redact

_DRAIN_S = 2.0  # output still coming after the agent exited: a child of it holds the pipe


def main(argv: Sequence[str]) -> int:
    path = Path(argv[0])
    launch = launches.read_launch(path)
    if launch is None:
        return 2
    stopping = threading.Event()
    started_agent: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _pass_on(started_agent, stopping))
    with open(launch.log, "ab") as log:
        mask = _masker(launch.dotenv)
        agent = _start(path, launch, log)
        if agent is None:
            return 0
        started_agent.append(agent)
        if stopping.is_set():  # stopped while it started
            _signal_group(agent.pid, signal.SIGTERM)
        started = time.time()
        _write_status(path, launch, agent, started)
        pump = threading.Thread(target=_pump, args=(agent, log, mask), daemon=True)
        pump.start()
        code = agent.wait()
        pump.join(timeout=_DRAIN_S)
        _kill_group(agent.pid)  # children it left behind, which may also hold the pipe open
        pump.join(timeout=_DRAIN_S)
        log.flush()
        end = log.tell()
    if not stopping.is_set():
        _write_status(path, launch, agent, started, code=code, log_end=end)
    return 0


def _start(path: Path, launch: launches.Launch, log: IO[bytes]) -> subprocess.Popen[bytes] | None:
    try:
        with open(launch.stdin, "rb") as stdin:
            return subprocess.Popen(
                list(launch.argv),
                cwd=launch.cwd,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its group is what a stop kills: the agent and its children
            )
    except OSError as e:
        message = f"cannot start agent `{launch.argv[0]}`: {e.strerror}"
        log.write(f"[orchestrator] {message}\n".encode())
        fields = {"wrapper_pid": os.getpid(), "agent_pid": 0, "agent_started": 0.0, "started": time.time()}
        launches.write_atomic(
            launches.status_file(path),
            {"launch": launch.id, **fields, "finished": True, "ended": time.time(), "error": message},
        )
        return None


def _write_status(
    path: Path,
    launch: launches.Launch,
    agent: subprocess.Popen[bytes],
    started: float,
    code: int | None = None,
    log_end: int = 0,
) -> None:
    status = launches.Status(
        launch=launch.id,
        wrapper_pid=os.getpid(),
        agent_pid=agent.pid,
        agent_started=0.0,  # the runner reads it (psutil costs every agent start time here)
        started=started,
        finished=code is not None,
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else 0,
        ended=time.time() if code is not None else 0.0,
        log_end=log_end,
    )
    launches.write_atomic(launches.status_file(path), status._asdict())


def _pump(agent: subprocess.Popen[bytes], log: IO[bytes], mask: Callable[[str], str]) -> None:
    assert agent.stdout is not None
    try:
        for raw in agent.stdout:
            log.write(mask(raw.decode("utf-8", "replace")).encode("utf-8"))
            log.flush()
    except (OSError, ValueError):
        pass


def _masker(dotenv: str) -> Callable[[str], str]:
    """Secrets (.env values, secret-named variables, key shapes) never reach the log."""
    try:
        values = envfile.read_dotenv(Path(dotenv).parent) if dotenv else {}
    except (OSError, ValueError):
        values = {}
    # The agent's environment holds the .env values too: they are masked as .env values, like the runner does.
    environ = {k: v for k, v in os.environ.items() if values.get(k) != v}
    return redact.Redactor.from_environment(environ, values).mask


def _pass_on(agent: list[subprocess.Popen[bytes]], stopping: threading.Event) -> Callable[[int, object], None]:
    def handler(signum: int, _frame: object) -> None:
        stopping.set()
        for started in agent:
            _signal_group(started.pid, signum)

    return handler


def _kill_group(pid: int) -> None:
    _signal_group(pid, getattr(signal, "SIGKILL", signal.SIGTERM))


def _signal_group(pid: int, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

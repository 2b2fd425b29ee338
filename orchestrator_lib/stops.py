"""Stop control: Ctrl-C and SIGTERM, `stop <ID>` and `stop` (control files), and a second Ctrl-C that kills.

The runner's one owner of "should this go on?": every wait of the run sleeps on its event, so a stop
wakes them all at once; each milestone has an event of its own for `stop <ID>`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator_lib import proc
from orchestrator_lib.errors import EXIT_INTERRUPTED


class StopControl:
    def __init__(self, control_dir: Path, say: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.event = threading.Event()
        self._control = control_dir
        self._say = say
        self._clock = clock
        self._stops: dict[str, threading.Event] = {}
        self._live_agents: dict[str, int] = {}  # milestone -> agent pid (0 when none), written by workers
        self._checked = 0.0
        self.interrupts = 0

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float | None = None) -> bool:
        """The sleep of every wait in a run: returns True at once when a stop is asked for."""
        return self.event.wait(seconds)

    def for_milestone(self, milestone_id: str) -> threading.Event:
        event = self._stops.setdefault(milestone_id, threading.Event())
        if self.event.is_set():
            event.set()  # asked for after a stop (an integration's resolver): stopped too
        return event

    def note_agent(self, milestone_id: str, pid: int) -> None:
        """An agent's pid is known at once (from its worker), for a second Ctrl-C."""
        self._live_agents[milestone_id] = pid

    def stop_all(self) -> None:
        self.event.set()
        for event in list(self._stops.values()):
            event.set()

    def check_requests(self) -> None:
        """`stop` and `stop <ID>` leave a file in the control folder; read at most every 0.3 s."""
        if self._clock() - self._checked < 0.3:
            return
        self._checked = self._clock()
        for request in self._control.glob("stop-*") if self._control.exists() else []:
            target = request.name.removeprefix("stop-")
            request.unlink(missing_ok=True)
            if target == "all":
                self.request_stop()
            else:
                self._say(f"{target}: stop requested")
                self.for_milestone(target).set()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGINT, self._on_signal)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            self._kill_now()
        self.request_stop()

    def request_stop(self) -> None:
        print("stopping: waiting for the agents to exit (Ctrl-C again kills them at once)", file=sys.stderr, flush=True)
        self.stop_all()

    def _kill_now(self) -> None:
        for pid in list(self._live_agents.values()):
            if pid:
                proc.kill_pid_group(pid, grace=0)
        os._exit(EXIT_INTERRUPTED)

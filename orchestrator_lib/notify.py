"""Notifications: `notify.command` (the event as JSON on its stdin) and desktop notifications.

Events: `run_finished`, `milestone_failed` (failed or blocked), `usage_limit` (the run pauses)
and `resumed`. They are delivered in order on a background thread, each notifier with a
timeout, so a slow or broken notifier never blocks or fails the run; problems go to the run log.
At the end of the run, pending notifications get a few seconds, then a hanging notifier is stopped.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator_lib import proc, redact
from orchestrator_lib.budget import HOLDING
from orchestrator_lib.config import NotifyConfig
from orchestrator_lib.render import Snapshot

EVENTS = ("run_finished", "milestone_failed", "usage_limit", "resumed")
TIMEOUT = 30.0  # seconds a notifier may take
log = logging.getLogger(__name__)


class Notifier:
    """Delivers events in order on one background thread; `send` never waits."""

    def __init__(
        self,
        config: NotifyConfig,
        root: Path,
        which: Callable[[str], str | None] = shutil.which,
        platform: str = sys.platform,
    ) -> None:
        self._config = config
        self._root = root
        self._which = which
        self._platform = platform
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @property
    def enabled(self) -> bool:
        return bool(self._config.command) or self._config.desktop

    def send(self, event: str, message: str, **fields: Any) -> None:
        if not self.enabled or self._closed.is_set():
            return
        payload = {"event": event, "message": message, "project": str(self._root), "time": time.time(), **fields}
        self._queue.put(payload)
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="notify", daemon=True)
            self._worker.start()

    def close(self, timeout: float = 5.0) -> None:
        """Give pending notifications up to `timeout` seconds, then stop a notifier that still runs."""
        if self._worker is None:
            return
        self._queue.put(None)
        self._worker.join(timeout)
        self._closed.set()  # what is still queued is dropped
        with self._lock:
            for process in list(self._processes):
                proc.kill_group(process, grace=0)
        self._worker.join(1.0)

    def _work(self) -> None:
        while not self._closed.is_set():
            payload = self._queue.get()
            if payload is None:
                return
            self._deliver(payload)

    def _deliver(self, payload: dict[str, Any]) -> None:
        for argv, stdin in self._commands(payload):
            try:
                self._run(argv, stdin)
            except Exception as e:  # a notifier must never take the run down
                log.warning("notification %s: `%s` failed: %s", payload["event"], argv[0], e)

    def _run(self, argv: Sequence[str], stdin: str) -> None:
        # Its own process group, so a notifier that hangs is stopped with everything it started.
        process = proc.popen_group(argv, cwd=self._root, env=os.environ)
        with self._lock:
            self._processes.add(process)
        try:
            out, _ = process.communicate(stdin.encode(), timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill_group(process, grace=0)
            log.warning("notification: `%s` took over %gs and was stopped", argv[0], TIMEOUT)
            return
        finally:
            with self._lock:
                self._processes.discard(process)
        if process.returncode:
            tail = out.decode("utf-8", "replace").strip()[-500:]
            log.warning("notification: `%s` exited %s: %s", argv[0], process.returncode, tail)

    def _commands(self, payload: dict[str, Any]) -> list[tuple[Sequence[str], str]]:
        commands: list[tuple[Sequence[str], str]] = []
        if self._config.command:
            commands.append((self._config.command, redact.active().mask(json.dumps(payload))))
        desktop = self._desktop_argv(payload) if self._config.desktop else None
        if desktop:
            commands.append((desktop, ""))
        return commands

    def _desktop_argv(self, payload: dict[str, Any]) -> tuple[str, ...] | None:
        title, body = "Claude Code Orchestrator", redact.active().clean(payload["message"])
        if self._platform == "darwin" and self._which("osascript"):
            script = f"display notification {_applescript(body)} with title {_applescript(title)}"
            return ("osascript", "-e", script)
        if self._which("notify-send"):
            return ("notify-send", "--app-name=orchestrator", title, body)
        log.debug("notify.desktop is on but neither notify-send nor osascript is installed")
        return None


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Announcer:
    """Turns the runner's successive snapshots into events: each failure, pause and resume once."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._statuses: dict[str, str] | None = None  # None until the first snapshot: the baseline
        self._paused_until = 0.0

    def observe(self, snap: Snapshot) -> None:
        statuses = {m.id: m.status for m in snap.milestones}
        paused = snap.run.paused_until if snap.run.paused_until > snap.now else 0.0
        if self._statuses is not None:
            self._failures(snap, self._statuses)
            self._pause(snap, paused)
        self._statuses, self._paused_until = statuses, paused

    def finished(self, snap: Snapshot, exit_code: int | None) -> None:
        """The last word: what is left to say, then `run_finished` (exit_code None: the runner crashed)."""
        self.observe(snap)
        run = snap.run
        status = run.status if exit_code is not None or run.status != "running" else "crashed"
        merged, total = sum(m.status == "merged" for m in snap.milestones), len(snap.milestones)
        text = f"run {status}: {merged}/{total} milestones merged" + (f" · {run.message}" if run.message else "")
        self._notifier.send("run_finished", text, status=status, exit_code=exit_code, merged=merged, total=total)

    def _failures(self, snap: Snapshot, before: dict[str, str]) -> None:
        for m in snap.milestones:
            if m.status in ("failed", "blocked") and before.get(m.id) != m.status:
                reason = m.reason.splitlines()[0] if m.reason else ""
                self._notifier.send(
                    "milestone_failed",
                    f"{m.id} {m.status}: {reason}"[:200],
                    milestone=m.id,
                    title=m.title,
                    status=m.status,
                    reason=m.reason,
                )

    def _pause(self, snap: Snapshot, paused: float) -> None:
        if paused and not self._paused_until:
            when = time.strftime("%H:%M", time.localtime(paused))
            hold = snap.run.pause_reason.startswith(HOLDING)  # before the limit: running agents go on
            self._notifier.send(
                "usage_limit",
                f"{snap.run.pause_reason}: new agents wait until {when}"
                if hold
                else f"usage limit: every agent waits until {when}",
                until=paused,
                reason=snap.run.pause_reason,
            )
        elif not paused and self._paused_until:
            self._notifier.send("resumed", "the usage limit has lifted: agents start again")

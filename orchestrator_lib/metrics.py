"""`logs/metrics.json`: what the machine and the agents used, sampled by a thread of the runner.

Every `monitor.interval_seconds` the sampler records CPU (averaged), memory, free disk, the
agents running, the runner's own memory and each agent's whole process tree; it keeps the
last WINDOW samples plus the peaks of the whole run, and per-milestone durations, attempts,
tokens and cost. The file is replaced atomically, so a reader always finds valid JSON.

The sampler reads the state store through its own read-only connection and never writes it:
only the main thread writes state.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from orchestrator_lib.errors import OrchestratorError
from orchestrator_lib.render import write_atomic
from orchestrator_lib.state import MilestoneState, StateStore

VERSION = 1
WINDOW = 360  # samples kept: an hour at the default 10 s
log = logging.getLogger(__name__)


class Reading(Protocol):
    @property
    def cpu_percent(self) -> float: ...
    @property
    def memory_percent(self) -> float: ...
    @property
    def disk_free_gb(self) -> float: ...


class Monitor(Protocol):
    """What advanced.SystemMonitor offers the sampler."""

    def sample(self) -> Reading: ...
    def agent_rss(self, pids: Mapping[str, int]) -> dict[str, int]: ...
    def own_rss(self) -> int: ...


Records = Callable[[], Mapping[str, MilestoneState]]


def state_reader(root: Path) -> Records:
    """Reads the milestones through a fresh read-only connection (safe from any thread)."""

    def read() -> Mapping[str, MilestoneState]:
        store = StateStore.open(root, readonly=True)
        if store is None:
            return {}
        try:
            return store.milestones()
        finally:
            store.close()

    return read


class MetricsSampler:
    """Started and stopped by the runner (`with MetricsSampler(...):`); one last sample on stop."""

    def __init__(
        self,
        path: Path,
        interval: float,
        monitor: Monitor,
        records: Records,
        clock: Callable[[], float] = time.time,
        window: int = WINDOW,
    ) -> None:
        self.path = path
        self._interval = interval
        self._monitor = monitor
        self._records = records
        self._clock = clock
        self._samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=window)
        self._peaks: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)

    def __enter__(self) -> MetricsSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._tick()  # the final figures: durations and costs as the run ends

    def _loop(self) -> None:
        while True:
            self._tick()
            if self._stop.wait(self._interval):
                return

    def _tick(self) -> None:
        try:
            self.record()
        except Exception:  # metrics must never stop a run
            log.warning("could not record metrics in %s", self.path, exc_info=True)

    def record(self) -> dict[str, Any]:
        """Take one sample and write the file; returns what was written."""
        now = self._clock()
        try:
            records = self._records()
        except OrchestratorError as e:
            log.debug("metrics: state unreadable: %s", e)
            records = {}
        agents = {m.id: m.agent_pid for m in records.values() if m.status == "running" and m.agent_pid}
        point = self._point(now, agents)
        self._samples.append(point)
        self._remember_peaks(point)
        document = {
            "version": VERSION,
            "updated_at": round(now, 3),
            "interval_seconds": self._interval,
            "window": self._samples.maxlen,
            "runner_pid": os.getpid(),
            "samples": list(self._samples),
            "peaks": self._peaks,
            "milestones": {mid: milestone_figures(m, now) for mid, m in sorted(records.items())},
        }
        write_atomic(self.path, json.dumps(document, separators=(",", ":")), private=True)
        return document

    def _point(self, now: float, agents: Mapping[str, int]) -> dict[str, Any]:
        reading = self._monitor.sample()
        return {
            "time": round(now, 3),
            "cpu_percent": round(reading.cpu_percent, 1),
            "memory_percent": round(reading.memory_percent, 1),
            "disk_free_gb": round(reading.disk_free_gb, 2),
            "agents_running": len(agents),
            "runner_rss_mb": _mb(self._monitor.own_rss()),
            "agent_rss_mb": {mid: _mb(rss) for mid, rss in self._monitor.agent_rss(agents).items()},
        }

    def _remember_peaks(self, point: dict[str, Any]) -> None:
        peaks = self._peaks
        for key in ("cpu_percent", "memory_percent", "agents_running", "runner_rss_mb"):
            peaks[key] = max(peaks.get(key, point[key]), point[key])
        peaks["disk_free_gb_min"] = min(peaks.get("disk_free_gb_min", point["disk_free_gb"]), point["disk_free_gb"])
        agent_peaks = peaks.setdefault("agent_rss_mb", {})
        for mid, mb in point["agent_rss_mb"].items():
            agent_peaks[mid] = max(agent_peaks.get(mid, mb), mb)


def milestone_figures(m: MilestoneState, now: float) -> dict[str, Any]:
    end = m.finished_at if m.finished_at and m.status != "running" else now
    return {
        "status": m.status,
        "duration_seconds": round(end - m.started_at, 1) if m.started_at else None,
        "attempts": m.attempts,
        "review_rounds": m.review_rounds,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "cost_usd": round(m.cost_usd, 6),
    }


def _mb(rss: int) -> float:
    return round(rss / 1024**2, 1)

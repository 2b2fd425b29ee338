"""The runner's mailbox on a Ray cluster, and the records a milestone task sends and returns.

One `Hub` actor per run lives on the runner's node. A worker pushes what its milestone emits (the
same `Progress`, `Paused` and `Held` events as locally) and the new text of its logs; the runner takes
them, writes the logs into its own log folder and hands the events to its reporter. The answer to a
push carries what a worker must hear from the runner: "stop", the run-wide usage-limit pause and
the run's spend (for the budget caps).
Plain Python, no Ray import: ray_executor makes it an actor, and tests can use it as it is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orchestrator_lib.pipeline import Job, MilestoneResult


class LogText(NamedTuple):
    name: str  # relative to the log folder: "1A.log", "reviews/1A-1.md"
    text: str


class Orders(NamedTuple):
    stop: bool
    paused_until: float
    spent: tuple[float, dict[int, float]] = (0.0, {})  # the run's spend and each stage's (budget caps)


class TaskSpec(NamedTuple):
    """Everything one milestone task needs on a worker; the config travels as plain data."""

    key: str  # milestone id and dispatch number: pushes of an earlier dispatch are told apart
    job: Job
    config: dict[str, Any]
    config_name: str
    remote: str
    work_dir: str | None
    base_branch: str
    identity: tuple[str, str]  # git user.name and user.email of the runner's repository


class Reply(NamedTuple):
    result: MilestoneResult
    node: str  # the Ray node id it ran on
    paused_until: float  # > 0: it gave way to a usage limit; run it again after that
    pause_reason: str
    tip: str  # the commit of milestone/<ID> it pushed ("" when it pushed none)


class Hub:
    def __init__(self) -> None:
        self._inbox: dict[str, list[object]] = {}
        self._stopped: set[str] = set()
        self._closed: set[str] = set()
        self._paused_until = 0.0
        self._spent: tuple[float, dict[int, float]] = (0.0, {})

    def push(self, key: str, items: list[object]) -> Orders:
        if items and key not in self._closed:
            self._inbox.setdefault(key, []).extend(items)
        return Orders(key in self._stopped, self._paused_until, self._spent)

    def take(self, key: str) -> list[object]:
        return self._inbox.pop(key, [])

    def forget(self, key: str) -> None:
        """A dispatch is over: what a stray worker of it still pushes is not kept."""
        self._inbox.pop(key, None)
        self._stopped.discard(key)
        self._closed.add(key)

    def stop(self, key: str) -> None:
        self._stopped.add(key)

    def pause(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)

    def spend(self, run_total: float, stage: int, stage_total: float) -> None:
        """The runner's ledger: a worker's budget gate refuses starts as the runner's would."""
        self._spent = (run_total, {**self._spent[1], stage: stage_total})

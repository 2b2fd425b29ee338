"""The reporter: the run's single writer of state, TASKS.md and the terminal (only the main thread calls it).

Workers send events (Progress, Paused, Held, MilestoneResult); `apply` turns each into a state write, a
regenerated TASKS.md when something a person reads changed, and a short line on the terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import NoReturn

from orchestrator_lib import budget, files, redact, render, tasksfile
from orchestrator_lib.config import BudgetConfig
from orchestrator_lib.errors import EXIT_FAILED, Interrupted
from orchestrator_lib.notify import Announcer
from orchestrator_lib.pipeline import Held, MilestoneResult, Paused, Progress
from orchestrator_lib.plan import Plan
from orchestrator_lib.state import MilestoneState, StateStore, Status, update

log = logging.getLogger("orchestrator")


def say(text: str) -> None:
    text = redact.strip_controls(text)  # it quotes agents' output: no escape codes of theirs
    print(text, flush=True)
    log.info(text)


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


class Reporter:
    def __init__(
        self,
        plan: Plan,
        store: StateStore,
        tasks: tasksfile.TasksFile,
        announcer: Announcer,
        caps: BudgetConfig = BudgetConfig(),
    ) -> None:
        self.plan = plan
        self.caps = caps  # shown against the spend in TASKS.md
        self.store = store
        self.tasks = tasks
        self.announcer = announcer
        self.say = say

    def render(self) -> None:
        snap = render.snapshot(self.plan, self.store.milestones(), self.store.run(), caps=self.caps)
        self.announcer.observe(snap)  # failures, pauses and resumes become notifications
        try:
            self.tasks.write(render.tasks_markdown(snap))
        except OSError as e:  # a full disk must not lose what the state store already holds
            log.warning("could not write %s: %s", self.tasks.name, e)

    def fail(self, message: str, said: str | None = None) -> int:
        """The run stops with a failure a person should look at: recorded, shown, exit 1 (state saved)."""
        self.store.update_run(status="failed", finished_at=time.time(), message=message)
        self.render()
        self.say(message if said is None else said)
        return EXIT_FAILED

    def finished(self, line: str | None = None) -> None:
        self.store.update_run(status="finished", finished_at=time.time())
        self.render()
        if line:
            self.say(line)

    def interrupted(self, root: Path) -> NoReturn:
        for rec in self.store.milestones().values():
            if rec.status == Status.RUNNING:
                self.store.put(update(rec, status=Status.INTERRUPTED, agent_pid=0))
        self.store.update_run(status="interrupted", finished_at=time.time())
        self.render()
        self.say(
            f"interrupted: state saved; continue with `{Path(sys.argv[0]).name} --project {root} --resume`"
            " (./orchestrator.sh run resumes by itself)"
        )
        raise Interrupted("interrupted by the user")

    def apply(self, event: object) -> MilestoneResult | None:
        """The main thread's single entry for state writes."""
        if isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, Paused):
            self.store.update_run(paused_until=event.until, pause_reason=event.reason)
            self.say(budget.pause_line(event.reason, clock(event.until)))
            self.render()
        elif isinstance(event, Held):
            if event.reason != self.store.run().hold_reason:
                self.store.update_run(hold_reason=event.reason)
                self.say(f"holding new agent starts: {event.reason}" if event.reason else "resources recovered")
        elif isinstance(event, MilestoneResult):
            return self._result(event)
        return None

    def _progress(self, event: Progress) -> None:
        rec = self.record(event.milestone_id)
        self.store.put(update(rec, **event.changes))
        if event.changes.keys() - {"last_line", "agent_pid", "agent_started", "role", "checks"}:
            self.render()
        role = event.changes.get("role")
        if role and role != rec.role and role != "prepare":
            self.say(f"  {rec.id} {role}")

    def record(self, milestone_id: str) -> MilestoneState:
        m = self.plan.get(milestone_id)
        assert m is not None
        return self.store.get(milestone_id) or MilestoneState(id=m.id, stage=m.stage, title=m.title)

    def _result(self, r: MilestoneResult) -> MilestoneResult:
        rec = self.record(r.id)
        status, reason = r.status, r.reason
        commit = r.commit or rec.commit
        self.store.put(
            update(rec, status=status, reason=reason, finished_at=time.time(), agent_pid=0, role="", commit=commit)
        )
        self.say(
            f"  {r.id} {'.' * 8} {status}"
            + (f": {reason.splitlines()[0][:120]}" if reason and status != "done" else "")
        )
        self.render()
        return r

    def closing_line(self) -> str:
        records = self.store.milestones()
        total = len(self.plan.milestones)
        pending = [m for m in self.plan.milestones if m.id not in records or records[m.id].status != Status.MERGED]
        if not pending:
            return f"all done: {total}/{total} milestones merged"
        return (
            f"done: what was selected is merged ({total - len(pending)}/{total} milestones merged); "
            f"next: stage {pending[0].stage} ({', '.join(m.id for m in pending)} not merged yet)"
        )


def setup_logging(log_dir: Path, level: str) -> None:
    """Every run writes a DEBUG log (masked) under the private log folder; LOG_LEVEL=DEBUG echoes it."""
    path = log_dir / f"orchestrator_{time.strftime('%Y%m%d_%H%M%S')}.log"
    files.open_private(path).close()  # the log folder 0700, the run log 0600
    handler = logging.FileHandler(path, encoding="utf-8")
    formatter = redact.MaskingFormatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root_logger = logging.getLogger()
    root_logger.setLevel(logging.DEBUG)
    root_logger.addHandler(handler)
    if level.upper() == "DEBUG":
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(redact.MaskingFormatter())
        console.setLevel(logging.DEBUG)
        root_logger.addHandler(console)

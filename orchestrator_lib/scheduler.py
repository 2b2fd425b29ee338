"""Dependencies mode (config `schedule: "dependencies"`): the plan run as a graph, with a merge queue.

A milestone starts once every milestone in its Dependencies is merged into the base branch, from the
base as it is then; it merges on its own as soon as it is done, one merge at a time (the main thread:
the only writer of state and the only one to move the base). A failure blocks only its dependents.
A merge predicted to conflict (orchestrator_lib/conflicts.py) goes back to the milestone's own
session first (pipeline.Conflict), then to the resolver, then the milestone is blocked.
"""

from __future__ import annotations

import concurrent.futures
import queue
from collections.abc import Callable, Sequence
from typing import NamedTuple

from orchestrator_lib import conflicts, git, graph, worktree_prep
from orchestrator_lib.config import Config
from orchestrator_lib.conflicts import Conflict
from orchestrator_lib.errors import EXIT_OK
from orchestrator_lib.integration import StageMerger
from orchestrator_lib.pipeline import Job, MilestoneResult, Services
from orchestrator_lib.plan import Milestone
from orchestrator_lib.reporter import Reporter
from orchestrator_lib.state import MilestoneState, Status, update
from orchestrator_lib.stops import StopControl


class Hooks(NamedTuple):
    """What the graph needs from the Runner: its dispatch unit, its events and its judgements."""

    services: Services
    reporter: Reporter
    stops: StopControl
    events: queue.Queue[object]
    work: Callable[[Services, Job], None]  # Runner._work: runs one job, puts its MilestoneResult on events
    merger: Callable[[Callable[[list[Milestone]], None]], StageMerger]  # given what tidies up after a merge
    judge: Callable[[MilestoneResult], MilestoneResult]  # an interrupted result: a stop, or a failure?
    done_before: Callable[[MilestoneState | None], bool]  # done, its branch still there: only the merge is left
    cannot_authenticate: Callable[[int, MilestoneResult], int]
    resume: bool
    budget_refused: Callable[[], str]  # why the run's or a stage's cap stops new starts ("" while it does not)
    budget_reached: Callable[[int], int]
    tidy: Callable[[list[Milestone]], None]  # merged milestones' worktrees and branches removed


class GraphRun:
    """One run of the selected milestones in dependencies mode; `run()` returns the run's exit code."""

    def __init__(self, hooks: Hooks, milestones: Sequence[Milestone], merged: set[str]) -> None:
        self.h = hooks
        self.cfg: Config = hooks.services.config
        self.worktrees = hooks.services.worktrees
        self.todo = {m.id: m for m in milestones}
        self.merged = set(merged)  # on the base branch: readiness is judged by this alone
        self.pending = [m for m in milestones if m.id not in merged]
        self.running: dict[str, Job] = {}
        self.queue: list[str] = []  # done, waiting for their merge, in the order they finished
        self.failed: dict[str, str] = {}  # id -> why (failed, or blocked at its merge)
        self.blocked: dict[str, str] = {}  # id -> "waits for 1B, which failed"
        self.updating: set[str] = set()  # given back to their own session once for a predicted conflict
        self.fatal: MilestoneResult | None = None
        self.own: dict[str, worktree_prep.Isolation] = {}
        self.resumed: set[str] = set()  # running or interrupted when the run began: they start first
        self.untidy: list[Milestone] = []  # merged; their worktrees go once the ready ones have started

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        self._take_stock()
        workers = self.cfg.max_parallel_tasks  # threads come as needed; an update job takes one too
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="milestone") as pool:
            try:
                code = self._loop(pool)
            except BaseException:
                self.h.stops.stop_all()  # a state write that fails must not leave agents running on
                raise
        return code if code is not None else self._ending()

    def _loop(self, pool: concurrent.futures.ThreadPoolExecutor) -> int | None:
        ending: int | None = None  # a merge ended the run (the base cannot move): the running finish first
        while True:
            self.h.stops.check_requests()
            stopping = self.h.stops.is_set() or self.fatal is not None or bool(self.h.budget_refused())
            if not stopping and ending is None:
                self._start_ready(pool)
            if self.queue and not stopping and ending is None:
                code = self._merge_next(pool)
                ending = None if code == EXIT_OK else code
                continue
            self._tidy()
            if not self.running:
                return ending
            self._next_event()

    def _tidy(self) -> None:
        # After the starts: a removed worktree is nothing the next milestone waits for.
        if self.untidy:
            done, self.untidy = self.untidy, []
            self.worktrees.drop_integration()
            self.h.tidy(done)

    def _take_stock(self) -> None:
        """Port blocks for every selected milestone; those done before (a resumed run) go to the queue."""
        store = self.h.reporter.store
        records = store.milestones()
        self.own = worktree_prep.for_tasks(records, [m.id for m in self.pending], self.cfg.worktree)
        record = self.h.reporter.record
        store.put(*(update(record(m.id), port_base=self.own[m.id].port_base) for m in self.pending))
        for m in sorted(self.pending, key=graph.order_key):
            if self.h.done_before(records.get(m.id)):
                self.queue.append(m.id)
        unfinished = (Status.RUNNING, Status.INTERRUPTED)
        self.resumed = {mid for mid, rec in records.items() if rec.status in unfinished}
        self.pending = [m for m in self.pending if m.id not in self.queue]
        names = ", ".join(m.id for m in sorted(self.todo.values(), key=graph.order_key))
        done = f" ({', '.join(self.queue)} already done: merging)" if self.queue else ""
        self.h.reporter.say(f"dependencies mode: {names}{done}")

    def _start_ready(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        free = self.cfg.max_parallel_tasks - len(self.running)
        ready = graph.ready(self.pending, self.merged)
        ready.sort(key=lambda m: m.id not in self.resumed)  # stable: agents a killed run left go on first
        for m in ready[: max(0, free)]:
            self.pending.remove(m)
            self._submit(pool, m, None)

    def _submit(self, pool: concurrent.futures.ThreadPoolExecutor, m: Milestone, conflict: Conflict | None) -> None:
        rec = self.h.reporter.store.get(m.id)
        reuse = conflict is not None or self.h.resume or bool(rec and rec.branch)
        job = Job(m, self._base_for(m, conflict), rec, reuse, self.own.get(m.id), conflict)
        self.running[m.id] = job
        pool.submit(self.h.work, self.h.services, job)

    def _base_for(self, m: Milestone, conflict: Conflict | None) -> str:
        """The base its checks and review diff against: the base now for a new branch (or one being brought
        up to it); for a branch an earlier run left, where it left the base, which has moved on since."""
        base, root, branch = self.worktrees.base_commit(), self.h.services.root, self.worktrees.branch_for(m.id)
        if conflict is not None or not git.branch_exists(root, branch):
            return base
        return git.fork_point(root, base, branch) or base

    def _next_event(self) -> None:
        try:
            event = self.h.events.get(timeout=0.5)
        except queue.Empty:
            return
        if isinstance(event, MilestoneResult):
            event = self._after_update(self.h.judge(event))
        result = self.h.reporter.apply(event)
        if result is not None:
            self._finished(result)

    # ------------------------------------------------------------ results

    def _after_update(self, r: MilestoneResult) -> MilestoneResult:
        """Its own session could not bring the branch up to the base: the resolver gets the merge instead."""
        if r.id not in self.updating or r.status in ("done", "interrupted") or r.fatal:
            return r
        self.h.reporter.say(f"  {r.id}: {r.reason.splitlines()[0] if r.reason else 'not resolved'}; the resolver tries")
        return r._replace(status="done", reason="")

    def _finished(self, r: MilestoneResult) -> None:
        self.running.pop(r.id, None)
        if r.fatal and self.fatal is None:
            self._stop_every_task(r)
        if r.status == "done":
            self.queue.append(r.id)
        elif r.status != "interrupted" or not (self.h.stops.is_set() or self.h.budget_refused()):
            self._fail(r.id, r.reason)  # an interrupted one of a stop or a cap goes on at --resume

    def _stop_every_task(self, fatal: MilestoneResult) -> None:
        """An agent that cannot log in fails every task the same way: stop them all now."""
        self.fatal = fatal
        self.h.reporter.say(f"stopping every task: {fatal.id} could not authenticate")
        for mid in self.running:
            self.h.stops.for_milestone(mid).set()

    def _fail(self, mid: str, reason: str) -> None:
        """Only the milestones that depend on it, directly or not, are blocked; everything else goes on."""
        self.failed[mid] = reason
        store, record = self.h.reporter.store, self.h.reporter.record
        waiting = {m.id for m in self.pending}
        for dependent in graph.dependents(list(self.todo.values()), mid):
            if dependent not in waiting:
                continue
            why = graph.blocked_reason(graph.failed_roots(list(self.todo.values()), dependent, self.failed))
            self.blocked[dependent] = why
            store.put(update(record(dependent), status=Status.BLOCKED, reason=why))
        self.pending = [m for m in self.pending if m.id not in self.blocked]
        self.h.reporter.render()

    # ------------------------------------------------------------ the merge queue

    def _merge_next(self, pool: concurrent.futures.ThreadPoolExecutor) -> int:
        mid = self.queue.pop(0)
        m = self.todo[mid]
        clash = self._predicted(mid)
        if clash and mid not in self.updating:
            self.updating.add(mid)
            base = self.worktrees.base_branch
            self.h.reporter.say(
                f"  {mid} would conflict with {base} in {', '.join(clash)}: its own session merges {base}"
            )
            self._submit(pool, m, Conflict(clash, base))
            return EXIT_OK
        code, blocked = self.h.merger(self.untidy.extend).merge_one(m)
        if code != EXIT_OK:
            return code
        if blocked:
            self.h.reporter.say(f"  {mid} blocked: {blocked.splitlines()[0]}")
            self._fail(mid, blocked)
        else:
            self.merged.add(mid)
        return EXIT_OK

    def _predicted(self, mid: str) -> tuple[str, ...]:
        root, branch = self.h.services.root, self.worktrees.branch_for(mid)
        if not git.branch_exists(root, branch):
            return ()
        return conflicts.predict(root, self.worktrees.base_commit(), branch)

    # ------------------------------------------------------------ the end

    def _ending(self) -> int:
        reporter = self.h.reporter
        if self.fatal is not None:
            return self.h.cannot_authenticate(self.fatal_stage(), self.fatal)
        if self.h.stops.is_set():
            reporter.interrupted(self.h.services.root)
        if self.h.budget_refused():
            self._say_failed()  # the cap is why the run ends, not all that went wrong in it
            if self.blocked:
                reporter.say(f"  blocked, waiting for them: {', '.join(sorted(self.blocked))}")
            return self.h.budget_reached(0)
        for m in self.pending:  # what nothing in this run can merge: say so rather than pass over it
            why = f"waits for {', '.join(graph.waits_for(m, self.merged))}, not merged"
            self.blocked[m.id] = why
            reporter.store.put(update(reporter.record(m.id), status=Status.BLOCKED, reason=why))
        if not self.failed and not self.blocked:
            reporter.finished(reporter.closing_line())
            return EXIT_OK
        self._say_failed()
        failed = ", ".join(f"{mid} ({self._status(mid)})" for mid in sorted(self.failed))
        blocked = ", ".join(sorted(self.blocked))
        said = f"not merged: {failed}" if failed else "not merged"
        said += f"; blocked, waiting for them: {blocked}" if blocked else ""
        said += ". Branches are kept; fix and run again with --resume (merged milestones are not redone)."
        return reporter.fail(said.split(". ")[0], said)

    def _say_failed(self) -> None:
        for mid, why in sorted(self.failed.items()):
            self.h.reporter.say(f"  {mid} {self._status(mid)}: {why.splitlines()[0] if why else ''}")

    def _status(self, mid: str) -> str:
        rec = self.h.reporter.store.get(mid)
        return str(rec.status) if rec else "failed"

    def fatal_stage(self) -> int:
        return self.todo[self.fatal.id].stage if self.fatal and self.fatal.id in self.todo else 0

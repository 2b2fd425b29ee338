#!/usr/bin/env python3
"""Claude Code Orchestrator: milestone files in, reviewed and merged code out.

Read top-down: main() parses the command line (its options live in orchestrator_lib/cli.py) and catches
the one error root; Runner.run() is the workflow (plan → stages → parallel milestones → integration).
Mechanisms live in advanced.py; plan parsing, agents, state and views in orchestrator_lib/.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import logging
import os
import queue
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from advanced import MilestoneValidator, RateLimitManager, SystemMonitor, WorktreeManager
from orchestrator_lib import (
    agents,
    budget,
    commands,
    draft,
    envfile,
    executor,
    faults,
    files,
    git,
    preflight,
    redact,
    render,
    repairs,
    scheduler,
    supervise,
    tasksfile,
    template,
    worktree_prep,
)
from orchestrator_lib.cli import build_parser, normalise
from orchestrator_lib.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OrchestratorError,
    UsageError,
)
from orchestrator_lib.integration import StageMerger
from orchestrator_lib.lock import RunLock
from orchestrator_lib.metrics import MetricsSampler, state_reader
from orchestrator_lib.notify import Announcer, Notifier
from orchestrator_lib.pipeline import Job, MilestoneResult, Progress, Services
from orchestrator_lib.plan import Milestone
from orchestrator_lib.project import Project, agent_not_installed, check_project, load_project
from orchestrator_lib.reporter import Reporter, clock, say, setup_logging
from orchestrator_lib.state import STATE_DIR, MilestoneState, Ownership, StateStore, Status, update
from orchestrator_lib.stops import StopControl

HERE = Path(__file__).resolve().parent
log = logging.getLogger("orchestrator")


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(normalise(sys.argv[1:] if argv is None else argv))
    redact.install(envfile.redactor_for(Path(args.project or ".")))
    files.umask()  # read now, while no other thread creates files
    with redact.masked_terminal(getattr(args, "no_color", False)):
        return _dispatch_once(args)


def _dispatch_once(args: argparse.Namespace) -> int:
    try:
        return dispatch(args)
    except OrchestratorError as e:
        print(f"error: {redact.strip_controls(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # the one place unexpected errors become exit 3
        return _internal_error()


def _internal_error() -> int:
    summary = traceback.format_exc().strip().splitlines()[-1]
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if files:
        log.error("internal error", exc_info=True)
        print(f"internal error: {summary} (traceback in {files[0].baseFilename})", file=sys.stderr)
    else:
        traceback.print_exc(file=sys.stderr)
        print(f"internal error: {summary}", file=sys.stderr)
    return EXIT_INTERNAL


def dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "draft": draft.command,
        "new": template.command,
        "run": cmd_run,
        "status": commands.status,
        "clean": commands.clean,
        "demo": lambda a: commands.demo(a, main),
        "validate": cmd_validate,
        "plan": commands.plan,
        "logs": commands.logs,
        "stop": commands.stop,
        "watch": commands.watch,
        "serve": commands.serve,
    }
    return handlers[args.command](args)


def cmd_validate(args: argparse.Namespace) -> int:
    project = load_project(args, keep_config_error=True)
    problems = check_project(project, args)
    if not problems and project.config_ok:  # a reachable remote and Ray: does a worker have the agent?
        problems += executor.worker_problems(project.config)
    missing = project.config_ok and agent_not_installed(project)
    if missing:
        print(f"warning: {missing}", file=sys.stderr)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        print(f"{len(problems)} problem(s) found; nothing was run", file=sys.stderr)
        return EXIT_USAGE
    stages = project.plan.stages()
    print(f"plan OK: {len(project.plan.milestones)} milestones in {len(stages)} stage(s); config OK")
    if project.config.executor.kind == "ray":
        print(executor.checked(project.config))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.validate_only:
        return cmd_validate(args)
    if args.whatif:
        return commands.plan(args)
    project = load_project(args, keep_config_error=True)
    problems = check_project(project, args)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        raise UsageError(f"{len(problems)} problem(s) found; nothing was run (fix them; see --validate-only)")
    if args.auto_resume and project.config.auto_resume:  # config auto_resume, or env AUTO_RESUME
        return supervise.supervise(args, HERE / "orchestrator.py")
    missing = agent_not_installed(project)
    if missing:
        raise UsageError(missing)
    return Runner(project, args).run()


# ---------------------------------------------------------------- the workflow


class StageResult(NamedTuple):
    stage: int
    code: int  # EXIT_OK: merged into the base branch; otherwise the run's exit code
    results: tuple[MilestoneResult, ...] = ()


class Parts(NamedTuple):
    """The Runner's collaborators, made by `Parts.make` in production; tests may pass their own."""

    worktrees: WorktreeManager
    rate_limits: RateLimitManager
    monitor: SystemMonitor
    notifier: Notifier
    validator: MilestoneValidator
    agent_env: dict[str, str]
    executor: executor.Executor = executor.LocalExecutor()  # where each milestone runs (executor.kind)

    @classmethod
    def make(
        cls,
        project: Project,
        stops: StopControl,
        tasks_ours: Callable[[Path], bool],
        teardown: Callable[[str, Path], None] | None = None,  # worktree.teardown, before a worktree goes
    ) -> Parts:
        root, cfg = project.root, project.config
        dotenv = envfile.read_dotenv(root)  # strict: a line that does not load is exit 2
        redactor = redact.Redactor.from_environment(os.environ, dotenv)
        redact.install(redactor)
        base = preflight.base_branch(root, cfg)
        owned = Ownership(root)  # what this runner makes; `clean` touches nothing else
        env = {**os.environ, **dotenv}
        return cls(
            worktrees=WorktreeManager(root, root / cfg.worktree_dir, base, cfg.tasks_file, tasks_ours, owned, teardown),
            rate_limits=RateLimitManager(cfg, sleep=stops.wait),
            monitor=SystemMonitor(cfg.monitor, root, sleep=stops.wait),
            notifier=Notifier(cfg.notify, root),
            validator=MilestoneValidator(cfg.validation, env, redactor),
            agent_env=env,
            executor=executor.make(cfg, root),
        )


class Runner:
    """The stage loop: start-up repairs, then each stage's milestones in parallel, then its integration."""

    def __init__(self, project: Project, args: argparse.Namespace, parts: Parts | None = None) -> None:
        self.p = project
        self.cfg = project.config
        self.args = args
        self.root = project.root
        self.state_dir = self.root / STATE_DIR
        self.log_dir = self.root / self.cfg.logging.log_dir
        self.stops = StopControl(self.state_dir / "control", say)
        self.events: queue.Queue[object] = queue.Queue()
        tasks_ours = lambda checkout: self.reporter.tasks.is_ours(checkout)  # noqa: E731
        self.parts = parts or Parts.make(project, self.stops, tasks_ours, self._teardown)
        self.worktrees = self.parts.worktrees
        self.preparer = worktree_prep.Preparer(
            self.root, self.cfg.worktree, project.config_file, self.parts.agent_env, self.log_dir, self._records
        )
        self.announcer = Announcer(self.parts.notifier)
        self.reporter: Reporter
        self._fatal: MilestoneResult | None = None  # an auth failure: every task stops
        self.ledger = budget.Ledger(self.cfg.budget)  # seeded from the state once it is open

    def run(self) -> int:
        if not git.has_commits(self.root):
            raise UsageError(f"{self.root} has no commits yet: make a first commit, then run again")
        with RunLock(self.state_dir) as lock:
            store = StateStore.open(self.root)
            assert store is not None
            tasks = tasksfile.TasksFile(self.root, self.cfg.tasks_file, say)
            self.reporter = Reporter(self.p.plan, store, tasks, self.announcer, self.cfg.budget)
            setup_logging(self.log_dir, self.cfg.logging.level)
            if lock.notice:
                say(f"notice: {lock.notice}")
            self.stops.install_signal_handlers()
            faults.hit("runner-start")
            code: int | None = None
            try:
                with self._metrics():
                    code = self._run_locked()
                return code
            finally:
                self.parts.executor.close()
                self._announce_end(code)
                store.close()

    def _metrics(self) -> MetricsSampler:
        """The sampler thread behind logs/metrics.json; it reads state read-only and never writes it."""
        path = self.log_dir / "metrics.json"
        return MetricsSampler(path, self.cfg.monitor.interval_seconds, self.parts.monitor, state_reader(self.root))

    def _announce_end(self, code: int | None) -> None:
        """Notify `run_finished` when this runner did work; then give notifications a moment to go out."""
        store = self.reporter.store
        try:
            run = store.run()
            if run.pid == os.getpid():
                self.announcer.finished(render.snapshot(self.p.plan, store.milestones(), run), code)
        except OrchestratorError as e:
            log.warning("could not notify the end of the run: %s", e)
        self.parts.notifier.close()

    def _run_locked(self) -> int:
        targets = self._repair()
        if not targets:
            say("nothing to do: every selected milestone is merged")
            self.reporter.finished()
            return EXIT_OK
        store = self.reporter.store
        run = store.run()
        if run.paused_until > time.time():  # a restarted runner keeps waiting instead of hammering
            self.parts.rate_limits.pause_until(run.paused_until, run.pause_reason)
            say(budget.pause_line(run.pause_reason, clock(run.paused_until)))
        self.ledger = budget.Ledger(self.cfg.budget, budget.spent_of(store.milestones().values()))
        store.update_run(status="running", pid=os.getpid(), started_at=time.time(), message="")
        self.reporter.render()
        if self.cfg.schedule == "dependencies":
            return self._run_graph([m for _, milestones in targets for m in milestones])
        for stage, milestones in targets:
            if self.stops.is_set():
                self.reporter.interrupted(self.root)
            result = self._run_stage(stage, milestones)
            if result.code != EXIT_OK:
                return result.code
        self.reporter.finished(self.reporter.closing_line())
        return EXIT_OK

    def _repair(self) -> list[tuple[int, list[Milestone]]]:
        """Start-up repairs, then what this run does: (stage, milestones) in order."""
        store = self.reporter.store
        git.exclude(self.root, repairs.runtime_patterns(self.cfg))
        merged = git.milestone_trailers(self.root, self.worktrees.base_commit())
        repairs.reconcile(self.p.plan, store, merged)
        repairs.refuse_plain_run_after_interrupt(store, self.args.resume)
        repairs.stop_orphans(store, self.root / self.cfg.worktree_dir, say)
        merged_here = [m for m in self.p.plan.milestones if m.id in merged]
        repairs.tidy(self.root, self.cfg, self.worktrees, merged_here, say)
        a = self.args
        return preflight.selection(
            self.p.plan, list(merged), a.stage, a.milestone, self.cfg.milestones_dir, self.cfg.schedule
        )

    # ------------------------------------------------------------ one stage

    def _run_stage(self, stage: int, milestones: list[Milestone]) -> StageResult:
        records = self.reporter.store.milestones()
        base = self.worktrees.base_commit()
        finished = [m for m in milestones if self._already_done(records.get(m.id))]
        todo = [m for m in milestones if m not in finished]
        names = ", ".join(m.id for m in milestones)
        say(f"stage {stage}: {names}" + (f" ({', '.join(m.id for m in finished)} already done)" if finished else ""))
        own = worktree_prep.for_tasks(records, [m.id for m in todo], self.cfg.worktree)  # port blocks and slugs
        record = self.reporter.record
        self.reporter.store.put(*(update(record(m.id), port_base=own[m.id].port_base) for m in todo))  # kept on resume
        reuse = {m.id: self.args.resume or bool(records.get(m.id) and records[m.id].branch) for m in todo}
        jobs = [Job(m, base, records.get(m.id), reuse[m.id], own[m.id]) for m in todo]
        results = tuple(self._run_jobs(jobs))
        if self._fatal is not None:
            return StageResult(stage, self._cannot_authenticate(stage, self._fatal), results)
        if self.stops.is_set():
            self.reporter.interrupted(self.root)
        if self.ledger.refused:
            for r in results:  # the cap ends the run; what failed before it still needs saying
                if r.status == "failed":
                    say(f"  {r.id} failed: {r.reason.splitlines()[0] if r.reason else ''}")
            return StageResult(stage, self._budget_reached(stage), results)
        if any(r.status == "interrupted" for r in results):
            self.reporter.interrupted(self.root)
        failed = [r for r in results if r.status != "done"]
        if failed:
            for r in failed:
                say(f"  {r.id} {r.status}: {r.reason.splitlines()[0] if r.reason else ''}")
            said = (
                f"stage {stage} not merged: {len(failed)} milestone(s) failed; branches are kept. "
                "Fix and run again (finished milestones are not redone)."
            )
            return StageResult(stage, self.reporter.fail(f"stage {stage} not merged", said), results)
        return StageResult(stage, self._merger().merge(stage, milestones), results)

    def _merger(self, tidy: Callable[[list[Milestone]], None] | None = None) -> StageMerger:
        """A stage's merger; with `tidy`, a merge queue's: the clearing up after a merge is the caller's."""
        preparer = self.preparer._replace(stop=self.stops.event)
        return StageMerger(self._services(), self.reporter, self.stops, tidy or self._cleanup, preparer, bool(tidy))

    def _run_graph(self, milestones: list[Milestone]) -> int:
        """Dependencies mode (orchestrator_lib/scheduler.py): the same dispatch unit, merges one by one."""
        merged = set(git.milestone_trailers(self.root, self.worktrees.base_commit()))
        hooks = scheduler.Hooks(
            self._services(),
            self.reporter,
            self.stops,
            self.events,
            self._work,
            self._merger,
            self._why_interrupted,
            self._already_done,
            self._cannot_authenticate,
            self.args.resume,
            lambda: self.ledger.refused,
            self._budget_reached,
            self._cleanup,
        )
        return scheduler.GraphRun(hooks, milestones, merged).run()

    def _budget_reached(self, stage: int) -> int:
        """The run's or a stage's cap stopped new starts; the agents that ran have finished. Exit 1."""
        message = f"{self.ledger.refused}: no new agent was started"
        fix = f"raise the cap in {self.p.config_file.name} (or remove it), then continue with --resume"
        where = f"stage {stage}" if stage else "the run"  # 0: dependencies mode, no stage of its own
        return self.reporter.fail(message, f"{where} stopped: {message}; {fix}")

    def _already_done(self, rec: MilestoneState | None) -> bool:
        return bool(rec and rec.status == Status.DONE and rec.branch and git.branch_exists(self.root, rec.branch))

    def _run_jobs(self, jobs: list[Job]) -> list[MilestoneResult]:
        if not jobs:
            return []
        services = self._services()
        results: list[MilestoneResult] = []
        workers = min(self.cfg.max_parallel_tasks, len(jobs))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="milestone") as pool:
            for job in jobs:
                pool.submit(self._work, services, job)
            with self._stopping_agents_on_error():
                self._collect(jobs, results)
        return results

    @contextlib.contextmanager
    def _stopping_agents_on_error(self) -> Iterator[None]:
        """A state write that fails (a full disk) must not leave the agents running on while the pool waits."""
        try:
            yield
        except BaseException:
            self.stops.stop_all()
            raise

    def _collect(self, jobs: list[Job], results: list[MilestoneResult]) -> None:
        while len(results) < len(jobs):
            self.stops.check_requests()  # on every pass: a steady stream of events must not starve it
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(event, MilestoneResult):
                event = self._why_interrupted(event)
            result = self.reporter.apply(event)
            if result is not None:
                results.append(result)
            if result is not None and result.fatal and self._fatal is None:
                self._stop_every_task(result, jobs)

    def _count_spend(self, event: object) -> None:
        """Spend reported by any executor and scheduler counts (a Ray worker records into no ledger of ours)."""
        m = self.p.plan.get(event.milestone_id) if isinstance(event, Progress) else None
        if m is not None and isinstance(event, Progress) and "cost_usd" in event.changes:
            self.ledger.record(m.id, m.stage, float(event.changes["cost_usd"]))

    def _why_interrupted(self, r: MilestoneResult) -> MilestoneResult:
        """An interrupted milestone is a failure when only it was stopped (`stop <ID>`) or another's auth failed."""
        if r.status != "interrupted":
            return r
        if self._fatal is not None:
            return r._replace(reason=f"stopped: the agent of {self._fatal.id} could not authenticate")
        if budget.REACHED in r.reason:
            return r  # held back by the run's or stage's cap: --resume goes on
        if not self.stops.is_set():
            stopped = self.stops.for_milestone(r.id).is_set()
            return r._replace(status="failed", reason="stopped by user" if stopped else r.reason)
        return r

    def _stop_every_task(self, fatal: MilestoneResult, jobs: list[Job]) -> None:
        """An agent that cannot log in fails every task the same way: stop them all now."""
        self._fatal = fatal
        say(f"stopping every task: {fatal.id} could not authenticate")
        for job in jobs:
            self.stops.for_milestone(job.milestone.id).set()

    def _cannot_authenticate(self, stage: int, fatal: MilestoneResult) -> int:
        presets = dict.fromkeys(a.preset for a in (self.cfg.agent, self.cfg.review.agent) if a is not None)
        fix = "; ".join(agents.auth_hint(p) for p in presets)
        reason = fatal.reason.removeprefix("auth: ").splitlines()[0]
        message = f"the agent cannot authenticate ({reason}): {fix}, then run again"
        return self.reporter.fail(message, f"stage {stage} stopped: {message}")

    def _work(self, services: Services, job: Job) -> None:
        try:
            result = self.parts.executor.run(services, job)
        except OrchestratorError as e:
            result = MilestoneResult(job.milestone.id, "failed", str(e))
        except Exception as e:
            log.exception("milestone %s crashed", job.milestone.id)
            result = MilestoneResult(job.milestone.id, "failed", f"internal error: {e!r} (see the run log)")
        self.events.put(result)

    def _services(self) -> Services:
        return Services(
            config=self.cfg,
            root=self.root,
            rate_limits=self.parts.rate_limits,
            monitor=self.parts.monitor,
            validator=self.parts.validator,
            worktrees=self.worktrees,
            agent_env=self.parts.agent_env,
            log_dir=self.log_dir,
            prompt_dir=self.state_dir / "prompts",
            stop_for=self.stops.for_milestone,
            emit=self._emit,
            clock=time.time,
            config_file=self.p.config_file,
            budget=self.ledger,
        )

    def _emit(self, event: object) -> None:
        """Workers' events go to the main thread; an agent's pid is also known at once, for a second Ctrl-C."""
        if isinstance(event, Progress) and "agent_pid" in event.changes:
            self.stops.note_agent(event.milestone_id, event.changes["agent_pid"])
        self._count_spend(event)
        self.events.put(event)

    def _records(self) -> dict[str, MilestoneState]:
        return self.reporter.store.milestones()

    def _teardown(self, name: str, path: Path) -> None:
        """worktree.teardown before a worktree is removed; a failure is logged, never fatal."""
        failure = self.preparer.teardown(name, path)
        if failure:
            say(f"  {name}: {failure.splitlines()[0]}")

    def _cleanup(self, milestones: list[Milestone]) -> None:
        if not self.cfg.keep_worktrees:
            repairs.remove_worktrees(self.root, self.worktrees, milestones)


if __name__ == "__main__":
    raise SystemExit(main())

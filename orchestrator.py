#!/usr/bin/env python3
"""Claude Code Orchestrator: milestone files in, reviewed and merged code out.

Read top-down: main() parses the command line (its options live in ccorch/cli.py) and catches
the one error root; Runner.run() is the workflow (plan → stages → parallel milestones → integration).
Mechanisms live in advanced.py; plan parsing, agents, state and views in ccorch/.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from advanced import Integration, MilestoneValidator, RateLimitManager, SystemMonitor, WorktreeManager
from ccorch import (
    agents,
    commands,
    envfile,
    faults,
    files,
    git,
    leftovers,
    orphans,
    preflight,
    proc,
    redact,
    render,
    safe_delete,
    supervise,
    tasksfile,
)
from ccorch.cli import build_parser, normalise
from ccorch.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Interrupted,
    OrchestratorError,
    UsageError,
)
from ccorch.integration import finish_by_hand, make_resolver
from ccorch.lock import RunLock
from ccorch.metrics import MetricsSampler, state_reader
from ccorch.notify import Announcer, Notifier
from ccorch.pipeline import Held, Job, MilestoneResult, Paused, Progress, Services, run_milestone
from ccorch.plan import Milestone
from ccorch.project import Project, check_project, load_project
from ccorch.state import STATE_DIR, MilestoneState, Ownership, StateStore, update

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
        "draft": commands.draft,
        "new": commands.new,
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
    missing = project.config_ok and agents.check_installed(project.config.agent, project.root)
    if missing:
        print(f"warning: {missing}", file=sys.stderr)
    if problems:
        print(render.problems_text(problems), file=sys.stderr)
        print(f"{len(problems)} problem(s) found; nothing was run", file=sys.stderr)
        return EXIT_USAGE
    stages = project.plan.stages()
    print(f"plan OK: {len(project.plan.milestones)} milestones in {len(stages)} stage(s); config OK")
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
    missing = agents.check_installed(project.config.agent, project.root)
    if missing:
        raise UsageError(missing)
    return Runner(project, args).run()


# ---------------------------------------------------------------- the workflow


class Runner:
    def __init__(self, project: Project, args: argparse.Namespace) -> None:
        self.p = project
        self.cfg = project.config
        self.args = args
        self.root = project.root
        self.state_dir = self.root / STATE_DIR
        self.log_dir = self.root / self.cfg.logging.log_dir
        self.stop = threading.Event()
        self._stops: dict[str, threading.Event] = {}
        self.events: queue.Queue[object] = queue.Queue()
        dotenv = preflight.read_env(self.root)  # strict: a line that does not load is exit 2
        self.agent_env = {**os.environ, **dotenv}
        self.redactor = redact.Redactor.from_environment(os.environ, dotenv)
        redact.install(self.redactor)
        base = preflight.base_branch(self.root, self.cfg)
        self.owned = Ownership(self.root)  # what this runner makes; `clean` touches nothing else
        self.worktrees = WorktreeManager(
            self.root, self.root / self.cfg.worktree_dir, base, self.cfg.tasks_file, self._tasks_ours, self.owned
        )
        self.rate_limits = RateLimitManager(self.cfg, sleep=self.stop.wait)
        self.monitor = SystemMonitor(self.cfg.monitor, self.root, sleep=self.stop.wait)
        self.notifier = Notifier(self.cfg.notify, self.root)
        self.announcer = Announcer(self.notifier)
        self.validator = MilestoneValidator(self.cfg.validation, self.agent_env, self.redactor)
        self.store: StateStore
        self.tasks: tasksfile.TasksFile
        self.interrupts = 0
        self._fatal: MilestoneResult | None = None  # an auth failure: every task stops
        self._stop_checked = 0.0
        self._live_agents: dict[str, int] = {}  # milestone -> agent pid (0 when none), written by workers

    def run(self) -> int:
        if not git.has_commits(self.root):
            raise UsageError(f"{self.root} has no commits yet: make a first commit, then run again")
        with RunLock(self.state_dir) as lock:
            self.store = self._open_state()
            self.tasks = tasksfile.TasksFile(self.root, self.cfg.tasks_file, self.say)
            self._setup_logging()
            if lock.notice:
                self.say(f"notice: {lock.notice}")
            self._install_signal_handlers()
            faults.hit("runner-start")
            code: int | None = None
            try:
                with self._metrics():
                    code = self._run_locked()
                return code
            finally:
                self._announce_end(code)
                self.store.close()

    def _metrics(self) -> MetricsSampler:
        """The sampler thread behind logs/metrics.json; it reads state read-only and never writes it."""
        path = self.log_dir / "metrics.json"
        return MetricsSampler(path, self.cfg.monitor.interval_seconds, self.monitor, state_reader(self.root))

    def _announce_end(self, code: int | None) -> None:
        """Notify `run_finished` when this runner did work; then give notifications a moment to go out."""
        try:
            run = self.store.run()
            if run.pid == os.getpid():
                self.announcer.finished(render.snapshot(self.p.plan, self.store.milestones(), run), code)
        except OrchestratorError as e:
            log.warning("could not notify the end of the run: %s", e)
        self.notifier.close()

    def _open_state(self) -> StateStore:
        store = StateStore.open(self.root)
        assert store is not None
        return store

    def _run_locked(self) -> int:
        git.exclude(self.root, self._runtime_patterns())
        merged = self._reconcile()
        self._refuse_plain_run_after_interrupt()
        self._stop_orphans()
        self._tidy(merged)
        targets = self._select(merged)
        if not targets:
            self.say("nothing to do: every selected milestone is merged")
            self.store.update_run(status="finished", finished_at=time.time())
            self.render()
            return EXIT_OK
        run = self.store.run()
        if run.paused_until > time.time():  # a restarted runner keeps waiting instead of hammering
            self.rate_limits.pause_until(run.paused_until, run.pause_reason)
            self.say(f"usage limit: {run.pause_reason} · every task waits until {_clock(run.paused_until)}")
        self.store.update_run(status="running", pid=os.getpid(), started_at=time.time(), message="")
        self.render()
        for stage, milestones in targets:
            if self.stop.is_set():
                return self._interrupted()
            code = self._run_stage(stage, milestones)
            if code != EXIT_OK:
                return code
        self.store.update_run(status="finished", finished_at=time.time())
        self.render()
        self.say(self._closing_line())
        return EXIT_OK

    def _runtime_patterns(self) -> list[str]:
        folders = (self.cfg.worktree_dir, STATE_DIR, self.cfg.logging.log_dir)
        presets = {self.cfg.agent.preset, *([self.cfg.review.agent.preset] if self.cfg.review.agent else [])}
        return [f"/{f.strip('/')}/" for f in folders] + [
            p for x in sorted(presets) for p in agents.OWN_FILES.get(x, ())
        ]

    def _reconcile(self) -> dict[str, str]:
        """Git is the source of truth for what is merged; state is a cache brought in line with it."""
        merged = git.milestone_trailers(self.root, self.worktrees.base_commit())
        records = self.store.milestones()
        for m in self.p.plan.milestones:
            rec = records.get(m.id) or MilestoneState(id=m.id, stage=m.stage, title=m.title)
            if m.id in merged and rec.status != "merged":
                self.store.put(update(rec, status="merged", merge_commit=merged[m.id], reason="", agent_pid=0))
            elif m.id not in merged and rec.status == "merged":
                self.store.put(update(rec, status="pending", merge_commit=""))  # the merge was undone
        return merged

    def _refuse_plain_run_after_interrupt(self) -> None:
        if self.args.resume:
            return
        unfinished = [r.id for r in self.store.milestones().values() if r.status in ("running", "interrupted")]
        if unfinished and self.store.run().status in ("running", "interrupted"):
            raise UsageError(
                f"a previous run was interrupted ({', '.join(sorted(unfinished))} unfinished): continue it with "
                "--resume, or start over with `clean` (add --force to drop unmerged work)"
            )

    def _stop_orphans(self) -> None:
        """Agents of a runner that died may still be writing: stop them before their worktrees are reused."""
        records = self.store.milestones().values()
        recorded = [orphans.Recorded(r.id, r.agent_pid, r.agent_started) for r in records]
        for orphan in orphans.find(recorded, self.root / self.cfg.worktree_dir):
            self.say(f"{orphan.milestone}: stopping agent pid {orphan.pid} left running by the previous run")
            orphans.stop(orphan)
        for rec in records:
            if rec.agent_pid:
                self.store.put(update(rec, agent_pid=0, agent_started=0.0))

    def _tidy(self, merged: dict[str, str]) -> None:
        """What a runner killed mid-way leaves behind: its integration, worktrees of merged milestones, temp files."""
        folder = self.root / self.cfg.worktree_dir
        for note in leftovers.repair(self.root, folder):
            self.say(f"notice: {note}")
        # stop requests were for that run
        safe_delete.remove_tree(self.state_dir / "control", root=self.root, allowed_under=self.state_dir)
        tasks = self.root / self.cfg.tasks_file
        for leftover in tasks.parent.glob(f".{tasks.name}.*.tmp"):  # render.write_atomic's, from a kill
            leftover.unlink(missing_ok=True)
        self.worktrees.drop_integration()
        git.prune_worktrees(self.root)
        branches = set(git.branches(self.root, "milestone/*"))
        if not self.cfg.keep_worktrees:
            self._cleanup([m for m in self.p.plan.milestones if m.id in merged and f"milestone/{m.id}" in branches])

    def _select(self, merged: dict[str, str]) -> list[tuple[int, list[Milestone]]]:
        a = self.args
        return preflight.selection(self.p.plan, list(merged), a.stage, a.milestone, self.cfg.milestones_dir)

    # ------------------------------------------------------------ one stage

    def _run_stage(self, stage: int, milestones: list[Milestone]) -> int:
        records = self.store.milestones()
        base = self.worktrees.base_commit()
        finished = [m for m in milestones if self._already_done(records.get(m.id))]
        todo = [m for m in milestones if m not in finished]
        names = ", ".join(m.id for m in milestones)
        self.say(
            f"stage {stage}: {names}" + (f" ({', '.join(m.id for m in finished)} already done)" if finished else "")
        )
        jobs = [
            Job(m, base, records.get(m.id), self.args.resume or bool(records.get(m.id) and records[m.id].branch))
            for m in todo
        ]
        results = self._run_jobs(jobs)
        if self._fatal is not None:
            return self._cannot_authenticate(stage, self._fatal)
        if self.stop.is_set() or any(r.status == "interrupted" for r in results):
            return self._interrupted()
        failed = [r for r in results if r.status != "done"]
        if failed:
            for r in failed:
                self.say(f"  {r.id} {r.status}: {r.reason.splitlines()[0] if r.reason else ''}")
            self.store.update_run(status="failed", finished_at=time.time(), message=f"stage {stage} not merged")
            self.render()
            self.say(
                f"stage {stage} not merged: {len(failed)} milestone(s) failed; branches are kept. "
                "Fix and run again (finished milestones are not redone)."
            )
            return 1
        return self._integrate(stage, milestones)

    def _already_done(self, rec: MilestoneState | None) -> bool:
        return bool(rec and rec.status == "done" and rec.branch and git.branch_exists(self.root, rec.branch))

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
            self.stop.set()
            for event in list(self._stops.values()):
                event.set()
            raise

    def _collect(self, jobs: list[Job], results: list[MilestoneResult]) -> None:
        while len(results) < len(jobs):
            self._check_stop_requests()  # on every pass: a steady stream of events must not starve it
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._fatal is not None and isinstance(event, MilestoneResult) and event.status == "interrupted":
                event = event._replace(reason=f"stopped: the agent of {self._fatal.id} could not authenticate")
            result = self._apply(event)
            if result is not None:
                results.append(result)
            if result is not None and result.fatal and self._fatal is None:
                self._stop_every_task(result, jobs)

    def _stop_every_task(self, fatal: MilestoneResult, jobs: list[Job]) -> None:
        """An agent that cannot log in fails every task the same way: stop them all now."""
        self._fatal = fatal
        self.say(f"stopping every task: {fatal.id} could not authenticate")
        for job in jobs:
            self._stop_for(job.milestone.id).set()

    def _cannot_authenticate(self, stage: int, fatal: MilestoneResult) -> int:
        presets = dict.fromkeys(a.preset for a in (self.cfg.agent, self.cfg.review.agent) if a is not None)
        fix = "; ".join(agents.auth_hint(p) for p in presets)
        reason = fatal.reason.removeprefix("auth: ").splitlines()[0]
        message = f"the agent cannot authenticate ({reason}): {fix}, then run again"
        self.store.update_run(status="failed", finished_at=time.time(), message=message)
        self.render()
        self.say(f"stage {stage} stopped: {message}")
        return 1

    def _work(self, services: Services, job: Job) -> None:
        try:
            result = run_milestone(services, job)
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
            rate_limits=self.rate_limits,
            monitor=self.monitor,
            validator=self.validator,
            worktrees=self.worktrees,
            agent_env=self.agent_env,
            log_dir=self.log_dir,
            prompt_dir=self.state_dir / "prompts",
            stop_for=self._stop_for,
            emit=self._emit,
            clock=time.time,
        )

    def _stop_for(self, milestone_id: str) -> threading.Event:
        event = self._stops.setdefault(milestone_id, threading.Event())
        if self.stop.is_set():
            event.set()  # asked for after a stop (an integration's resolver): stopped too
        return event

    def _emit(self, event: object) -> None:
        """Workers' events go to the main thread; an agent's pid is also known at once, for a second Ctrl-C."""
        if isinstance(event, Progress) and "agent_pid" in event.changes:
            self._live_agents[event.milestone_id] = event.changes["agent_pid"]
        self.events.put(event)

    def _check_stop_requests(self) -> None:
        if time.monotonic() - self._stop_checked < 0.3:
            return
        self._stop_checked = time.monotonic()
        control = self.state_dir / "control"
        for request in control.glob("stop-*") if control.exists() else []:
            target = request.name.removeprefix("stop-")
            request.unlink(missing_ok=True)
            if target == "all":
                self.request_stop()
            else:
                self.say(f"{target}: stop requested")
                self._stop_for(target).set()

    def _apply(self, event: object) -> MilestoneResult | None:
        """The main thread's single entry for state writes."""
        if isinstance(event, Progress):
            rec = self._record(event.milestone_id)
            self.store.put(update(rec, **event.changes))
            if event.changes.keys() - {"last_line", "agent_pid", "agent_started", "role", "checks"}:
                self.render()
            role = event.changes.get("role")
            if role and role != rec.role and role != "prepare":
                self.say(f"  {rec.id} {role}")
        elif isinstance(event, Paused):
            self.store.update_run(paused_until=event.until, pause_reason=event.reason)
            self.say(
                f"usage limit: {event.reason} · every task waits until "
                f"{time.strftime('%H:%M:%S', time.localtime(event.until))}"
            )
            self.render()
        elif isinstance(event, Held):
            if event.reason != self.store.run().hold_reason:
                self.store.update_run(hold_reason=event.reason)
                self.say(f"holding new agent starts: {event.reason}" if event.reason else "resources recovered")
        elif isinstance(event, MilestoneResult):
            return self._record_result(event)
        return None

    def _record(self, milestone_id: str) -> MilestoneState:
        m = self.p.plan.get(milestone_id)
        assert m is not None
        return self.store.get(milestone_id) or MilestoneState(id=m.id, stage=m.stage, title=m.title)

    def _record_result(self, r: MilestoneResult) -> MilestoneResult:
        if r.status == "interrupted" and not self.stop.is_set() and self._fatal is None:  # `stop <ID>`: it fails
            r = r._replace(status="failed", reason="stopped by user" if self._stop_for(r.id).is_set() else r.reason)
        rec = self._record(r.id)
        status, reason = r.status, r.reason
        self.store.put(
            update(
                rec,
                status=status,
                reason=reason,
                finished_at=time.time(),
                agent_pid=0,
                role="",
                commit=r.commit or rec.commit,
            )
        )
        self.say(
            f"  {r.id} {'.' * 8} {status}"
            + (f": {reason.splitlines()[0][:120]}" if reason and status != "done" else "")
        )
        self.render()
        return r

    def _interrupted(self) -> int:
        for rec in self.store.milestones().values():
            if rec.status == "running":
                self.store.put(update(rec, status="interrupted", agent_pid=0))
        self.store.update_run(status="interrupted", finished_at=time.time())
        self.render()
        self.say(
            f"interrupted: state saved; continue with `{Path(sys.argv[0]).name} --project {self.root} --resume`"
            " (./orchestrator.sh run resumes by itself)"
        )
        raise Interrupted("interrupted by the user")

    # ------------------------------------------------------------ integration

    def _integrate(self, stage: int, milestones: list[Milestone]) -> int:
        self.say(f"stage {stage}: merging {', '.join(m.id for m in milestones)}")
        resolver = make_resolver(self._services(), stage, milestones)
        old = self.worktrees.base_commit()
        short = self._wait_for_disk()
        if short:
            return self._interrupted() if self.stop.is_set() else self._no_disk(stage, short)
        result = self.worktrees.integrate([(m.id, m.title) for m in milestones], self._after_merge, resolver)
        if self.stop.is_set():  # nothing has moved yet: drop the half-done integration, resume redoes it
            self.worktrees.drop_integration()
            return self._interrupted()
        for note in result.notes:
            self.say(f"  {note}")
        if not result.ok:
            return self._integration_failed(stage, milestones, result)
        merged = self._mark_merged(milestones, result.merges)
        self._commit_tasks_file(stage, merged)
        new = git.rev_parse(self.worktrees.integration_path, "HEAD") or result.commit
        faults.hit("move-base")
        blocking = self.worktrees.move_base(old, new)
        if blocking:
            return self._base_blocked(stage, milestones, blocking)
        self.worktrees.drop_integration()
        self.store.put(*merged.values())  # only now: the base branch holds the merges
        self._cleanup(milestones)
        self.render()
        self.say(f"stage {stage} merged into {self.worktrees.base_branch} ({new[:10]})")
        return EXIT_OK

    def _wait_for_disk(self) -> str | None:
        """Hold while free disk is short (the integration worktree needs room), up to monitor.max_wait_minutes."""
        deadline = time.monotonic() + self.cfg.monitor.max_wait_minutes * 60
        short = self.monitor.disk_shortage()
        while short and time.monotonic() < deadline and not self.stop.wait(self.cfg.monitor.interval_seconds):
            short = self.monitor.disk_shortage()
        return short

    def _no_disk(self, stage: int, short: str) -> int:
        message = f"stage {stage} not merged: {short}; free some space, then run again"
        self.store.update_run(status="failed", finished_at=time.time(), message=message)
        self.render()
        self.say(message)
        return 1

    def _after_merge(self, path: Path) -> str | None:
        faults.hit("merge")
        if self.stop.is_set():
            return "stopped by the user"
        return self.validator.merged(path)

    def _mark_merged(self, milestones: list[Milestone], merges: dict[str, str]) -> dict[str, MilestoneState]:
        return {
            m.id: update(self._record(m.id), status="merged", merge_commit=merges[m.id], reason="") for m in milestones
        }

    def _commit_tasks_file(self, stage: int, merged: dict[str, MilestoneState]) -> None:
        records = {**self.store.milestones(), **merged}
        text = render.tasks_markdown(render.snapshot(self.p.plan, records, self.store.run()))
        render.write_atomic(self.worktrees.integration_path / self.cfg.tasks_file, text)
        git.commit_all(self.worktrees.integration_path, f"Update {self.cfg.tasks_file}: stage {stage} merged")

    def _integration_failed(self, stage: int, milestones: list[Milestone], result: Integration) -> int:
        self.worktrees.drop_integration()
        culprit = next((m for m in milestones if m.id == result.failed), milestones[-1])
        self.store.put(update(self._record(culprit.id), status="blocked", reason=result.reason))
        branches = [(m.id, m.title, self.worktrees.branch_for(m.id)) for m in milestones]
        test = self.cfg.validation.test_command
        how = finish_by_hand(self.root, self.worktrees.base_branch, branches, culprit.id, result.conflicted, test)
        message = (
            f"stage {stage} blocked: {result.reason}\n{self.worktrees.base_branch} was not moved; every "
            f"milestone/* branch is kept. {how}"
        )
        self.store.update_run(status="failed", finished_at=time.time(), message=message)
        self.render()
        self.say(message)
        return 1

    def _base_blocked(self, stage: int, milestones: list[Milestone], blocking: list[str]) -> int:
        kept = self.worktrees.keep_integration(f"orchestrator/stage-{stage}")
        self.worktrees.drop_integration()
        reason = (
            f"your uncommitted changes in {', '.join(blocking)} would be overwritten; the merged result is "
            f"on branch {kept}. Commit or stash them, then run again: it moves {self.worktrees.base_branch} "
            f"there (it also refreshes {self.cfg.tasks_file}, which blocks a plain `git merge --ff-only`)"
        )
        self.store.update_run(status="failed", finished_at=time.time(), message=reason)
        self.render()
        self.say(f"stage {stage} merged but not applied: {reason}")
        return 1

    def _cleanup(self, milestones: list[Milestone]) -> None:
        if self.cfg.keep_worktrees:
            return
        for m in milestones:
            try:
                self.worktrees.remove(m.id, delete_branch=True)
            except OrchestratorError as e:
                log.warning("could not remove the worktree of %s: %s", m.id, e)
        git.prune_worktrees(self.root)

    # ------------------------------------------------------------ output, signals

    def render(self) -> None:
        snap = render.snapshot(self.p.plan, self.store.milestones(), self.store.run())
        self.announcer.observe(snap)  # failures, pauses and resumes become notifications
        try:
            self.tasks.write(render.tasks_markdown(snap))
        except OSError as e:  # a full disk must not lose what the state store already holds
            log.warning("could not write %s: %s", self.cfg.tasks_file, e)

    def _tasks_ours(self, checkout: Path) -> bool:
        return self.tasks.is_ours(checkout)

    def _closing_line(self) -> str:
        records = self.store.milestones()
        total = len(self.p.plan.milestones)
        pending = [m for m in self.p.plan.milestones if m.id not in records or records[m.id].status != "merged"]
        if not pending:
            return f"all done: {total}/{total} milestones merged"
        return (
            f"done: what was selected is merged ({total - len(pending)}/{total} milestones merged); "
            f"next: stage {pending[0].stage} ({', '.join(m.id for m in pending)} not merged yet)"
        )

    def say(self, text: str) -> None:
        text = redact.strip_controls(text)  # it quotes agents' output: no escape codes of theirs
        print(text, flush=True)
        log.info(text)

    def _setup_logging(self) -> None:
        path = self.log_dir / f"orchestrator_{time.strftime('%Y%m%d_%H%M%S')}.log"
        files.open_private(path).close()  # the log folder 0700, the run log 0600
        handler = logging.FileHandler(path, encoding="utf-8")
        formatter = redact.MaskingFormatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
        handler.setFormatter(formatter)
        root_logger = logging.getLogger()
        root_logger.setLevel(logging.DEBUG)
        root_logger.addHandler(handler)
        level = self.cfg.logging.level.upper()
        if level == "DEBUG":
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(redact.MaskingFormatter())
            console.setLevel(logging.DEBUG)
            root_logger.addHandler(console)

    def _install_signal_handlers(self) -> None:
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
        self.stop.set()
        for event in self._stops.values():
            event.set()

    def _kill_now(self) -> None:
        for pid in list(self._live_agents.values()):
            if pid:
                proc.kill_pid_group(pid, grace=0)
        os._exit(EXIT_INTERRUPTED)


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


if __name__ == "__main__":
    raise SystemExit(main())

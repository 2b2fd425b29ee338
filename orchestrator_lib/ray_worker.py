"""One milestone as a Ray task, on a worker: fetch, worktree, `pipeline.run_milestone`, push, reply.

The worker keeps a clone of `executor.remote` per node under `executor.work_dir` (default: a folder
under its temp dir), fetches the stage base the runner pushed, lines its `milestone/<ID>` branch up
with the remote's (the last pushed state wins; a worktree is kept when it is already there, so a
milestone resubmitted to the same node finds its files and its agent's session), and runs the very
same pipeline as a local run. Every commit is pushed at once, with a lease, so a worker of an
earlier dispatch can never overwrite a later one. Events and log text go to the runner through the
hub (orchestrator_lib/ray_hub.py); a usage limit, its own or another worker's, makes the task give
way at its next agent start and reply "paused until T", so the runner holds every dispatch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from filelock import FileLock

from advanced import MilestoneValidator, RateLimitManager, SystemMonitor, WorktreeManager
from orchestrator_lib import agents, budget, files, git, launches, proc, redact, safe_delete
from orchestrator_lib import config as configuration
from orchestrator_lib.errors import OrchestratorError
from orchestrator_lib.pipeline import Job, MilestoneResult, Progress, Services, run_milestone
from orchestrator_lib.ray_hub import LogText, Reply, TaskSpec
from orchestrator_lib.state import STATE_DIR

log = logging.getLogger("orchestrator.ray")
BASE_REFS = "refs/orchestrator/bases"  # where the runner pushes each base commit it dispatches from


def run_task(spec: TaskSpec, hub: Any) -> Reply:
    node = ray.get_runtime_context().get_node_id()
    m = spec.job.milestone
    clone = clone_dir(spec.work_dir, spec.remote, node)
    stop = threading.Event()
    pump = Pump(hub, spec.key, clone / STATE_DIR / "logs", m.id, stop)
    pump.start(Progress(m.id, {"node": node}))
    branch = Branch(clone, spec.remote, WorktreeManager.branch_for(m.id))
    limiter: GiveWay | None = None
    try:
        cfg = configuration.from_data(spec.config, Path(spec.config_name))
        with FileLock(str(clone.with_name(clone.name + ".lock")), timeout=600):
            branch.lease = checkout(clone, spec, branch.name, clone / cfg.worktree_dir)
            stop_leftovers(clone / STATE_DIR, m.id)
        limiter = GiveWay(cfg, pump, stop)
        pump.ledger = budget.Ledger(cfg.budget)
        pump.send()  # the run's spend is known before the first agent start
        result = run_milestone(services(spec, cfg, clone, limiter, pump, branch, stop), _continued(spec.job))
        branch.push()
    except OrchestratorError as e:
        result = MilestoneResult(m.id, "failed", str(e))
    except Exception as e:  # like Runner._work: a crash of this milestone is its failure, not the run's
        log.exception("milestone %s crashed on node %s", m.id, node)
        result = MilestoneResult(m.id, "failed", f"internal error on Ray node {node[:8]}: {e!r}")
    finally:
        pump.close()
    gave_way = limiter.gave_way if limiter and result.status == "interrupted" and not stop.is_set() else 0.0
    return Reply(result, node, gave_way, limiter.reason if limiter else "", branch.lease)


def check_agent(config: dict[str, Any]) -> str | None:
    """--validate-only's look at a worker: can it start git and the configured agent?"""
    cfg = configuration.from_data(config, Path(configuration.CONFIG_FILE))
    node = ray.get_runtime_context().get_node_id()[:8]
    if shutil.which("git") is None:
        return f"Ray node {node}: git is not installed there"
    missing = agents.check_installed(cfg.agent, Path(tempfile.gettempdir()))
    return f"Ray node {node}: {missing}" if missing else None


def _continued(job: Job) -> Job:
    """The runner decided whether the branch may be continued; here it always is (lined up in checkout)."""
    return job._replace(reuse_branch=True)


def clone_dir(work_dir: str | None, remote: str, node: str) -> Path:
    # Per node: two nodes on one machine (the tests, or a big box) must not share a clone.
    base = Path(work_dir).expanduser() if work_dir else Path(tempfile.gettempdir()) / "orchestrator-ray"
    return base / node[:12] / hashlib.sha256(remote.encode()).hexdigest()[:12]


def checkout(clone: Path, spec: TaskSpec, branch: str, worktree_dir: Path) -> str:
    """The clone up to date with the base and the branch's last pushed state; returns that tip ("": none)."""
    if not (clone / ".git").exists():
        clone.mkdir(parents=True, exist_ok=True)
        git.git(clone, "init", "-q")
    name, email = spec.identity
    if name and email:
        git.git(clone, "config", "user.name", name)
        git.git(clone, "config", "user.email", email)
    base = spec.job.base
    git.fetch(clone, spec.remote, f"+{BASE_REFS}/{base}:{BASE_REFS}/{base}")
    tip = git.remote_tip(clone, spec.remote, f"refs/heads/{branch}") or ""
    if tip:
        git.fetch(clone, spec.remote, f"+refs/heads/{branch}:refs/orchestrator/remote/{branch}")
    line_up(clone, worktree_dir, branch, base, tip)
    return tip


def stop_leftovers(state: Path, milestone_id: str) -> None:
    """Agents of this milestone that a lost task left running on this node are stopped first.

    Ray ends the tasks of a runner that died, and the agent wrappers with them (its workers' direct
    children), but not the agents, which run in sessions of their own: a resubmitted milestone must
    not share its worktree with one. Its agent's session files stay, so Claude's --resume goes on.
    """
    for path, launch in launches.all_launches(state / launches.AGENTS_DIR):
        status = launches.read_status(path, launch)
        if launch.milestone != milestone_id or status is None or status.finished:
            continue
        if proc.pid_alive(status.agent_pid):
            launches.kill(status, launches.wrapper_running(path, launch))
            with files.open_private(state / "logs" / f"{milestone_id}.log") as f:
                f.write(f"[orchestrator] stopped agent pid {status.agent_pid}, left running by a lost task\n")


def line_up(clone: Path, worktree_dir: Path, branch: str, base: str, tip: str) -> None:
    """The local branch at the remote's tip. A worktree already on it stays, uncommitted files and all."""
    local = git.rev_parse(clone, f"refs/heads/{branch}")
    keep = local == tip if tip else local is None or not git.count_commits(clone, base, branch)
    if keep:
        return
    registered = git.worktree_of_branch(clone, branch)
    if registered is not None:
        safe_delete.remove_worktree(clone, registered, allowed_under=worktree_dir)
    if tip:
        git.set_branch(clone, branch, tip)
    else:
        git.delete_branch(clone, branch, force=True)


def services(
    spec: TaskSpec, cfg: configuration.Config, clone: Path, limiter: GiveWay, pump: Pump, branch: Branch, stop: Any
) -> Services:
    env = dict(os.environ)  # the worker's own: its PATH, its agent login; the runner sends no secrets
    redactor = redact.Redactor.from_environment(env, {})
    redact.install(redactor)
    state = clone / STATE_DIR
    return Services(
        config=cfg,
        root=clone,
        rate_limits=limiter,
        monitor=SystemMonitor(cfg.monitor, clone, sleep=stop.wait),
        validator=MilestoneValidator(cfg.validation, env, redactor),
        worktrees=SharedClone(clone, clone / cfg.worktree_dir, spec.base_branch, cfg.tasks_file),
        agent_env=env,
        log_dir=state / "logs",
        prompt_dir=state / "prompts",
        stop_for=lambda _id: stop,
        emit=Emitter(pump, branch),
        clock=time.time,
        config_file=Path(spec.config_name),
        budget=pump.ledger,
    )


class SharedClone(WorktreeManager):
    """Tasks in several worker processes of one node share the clone: a worktree is made under a file
    lock (WorktreeManager's own lock holds only within a process; `git worktree prune` in one would
    delete the folder another is still adding)."""

    def ensure(self, milestone_id: str, base: str, reuse: bool) -> Path:
        with FileLock(str(self.root.with_name(self.root.name + ".lock")), timeout=600):
            return super().ensure(milestone_id, base, reuse)


class Branch:
    """milestone/<ID> on the remote: pushed with a lease on the tip this task last saw."""

    def __init__(self, clone: Path, remote: str, name: str) -> None:
        self.clone, self.remote, self.name = clone, remote, name
        self.lease = ""

    def push(self) -> None:
        tip = git.rev_parse(self.clone, f"refs/heads/{self.name}")
        if tip is None or tip == self.lease:
            return
        ref = f"refs/heads/{self.name}"
        git.push(self.clone, self.remote, f"--force-with-lease={ref}:{self.lease}", f"{ref}:{ref}")
        self.lease = tip


class Emitter:
    """`services.emit` on a worker: to the runner through the pump; a commit is pushed first."""

    def __init__(self, pump: Pump, branch: Branch) -> None:
        self._pump, self._branch = pump, branch

    def __call__(self, event: object) -> None:
        if isinstance(event, Progress) and event.changes.get("commit"):
            self._branch.push()  # the last pushed state is where a resubmission starts
        self._pump.emit(event)


class GiveWay(RateLimitManager):
    """A usage limit on a worker ends the task at its next agent start: the runner holds every
    dispatch until the limit lifts and then resubmits it, preferring this node."""

    def __init__(self, cfg: configuration.Config, pump: Pump, stop: threading.Event) -> None:
        super().__init__(cfg, sleep=stop.wait)
        self._pump = pump
        self.gave_way = 0.0

    def wait_if_paused(self, stop: threading.Event) -> bool:
        until = max(self.paused_until, self._pump.paused_until)
        if until > time.time():
            self.gave_way = until
            self.reason = self.reason or "usage limit (another task)"
            return False
        return not stop.is_set()


class Pump:
    """Sends what the milestone emits and the new text of its logs to the hub, a few times a second,
    and hears back "stop" and the run-wide pause."""

    GAP = 0.25

    def __init__(self, hub: Any, key: str, logs: Path, milestone_id: str, stop: threading.Event) -> None:
        self._hub, self._key, self._logs, self._id, self._stop = hub, key, logs, milestone_id, stop
        self._lock, self._sending = threading.Lock(), threading.Lock()
        self._events: list[object] = []
        self._offsets = {p: _size(p) for p in self._files()}  # earlier dispatches' text was sent then
        self.paused_until = 0.0
        self.ledger: budget.Ledger | None = None  # the runner's spend, mirrored for the budget caps
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pump", daemon=True)

    def start(self, first: object) -> None:
        self.emit(first)
        self.send()  # the run-wide pause is known before the first agent start
        self._thread.start()

    def emit(self, event: object) -> None:
        with self._lock:
            self._events.append(event)

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)
        self.send(final=True)

    def send(self, final: bool = False) -> None:
        with self._sending:
            with self._lock:
                items, self._events = self._events, []
            items += self._new_text(final)
            orders = ray.get(self._hub.push.remote(self._key, items), timeout=120)
        self.paused_until = orders.paused_until
        self._mirror(orders.spent)
        if orders.stop:
            self._stop.set()

    def _mirror(self, spent: tuple[float, dict[int, float]]) -> None:
        run_total, stages = spent
        if self.ledger is None:
            return
        for stage, total in stages.items():
            self.ledger.record(f"stage {stage}", stage, total)
        self.ledger.record("other stages", -1, run_total - sum(stages.values()))

    def _loop(self) -> None:
        while not self._done.wait(self.GAP):
            try:
                self.send()
            except Exception:  # the hub is gone (the runner died): the task goes on, its reply is lost
                log.warning("cannot reach the runner's hub", exc_info=True)

    def _files(self) -> list[Path]:
        return [self._logs / f"{self._id}.log", *sorted((self._logs / "reviews").glob(f"{self._id}-*.md"))]

    def _new_text(self, final: bool) -> list[object]:
        found: list[object] = []
        for path in self._files():
            size = _size(path)
            start = self._offsets.get(path, 0) if size >= self._offsets.get(path, 0) else 0
            if size <= start:
                continue
            with path.open("rb") as f:
                f.seek(start)
                data = f.read(size - start)
            if not final and b"\n" in data:
                data = data[: data.rindex(b"\n") + 1]  # whole lines: a character is never cut in two
            self._offsets[path] = start + len(data)
            name = path.relative_to(self._logs).as_posix()
            found.append(LogText(name, data.decode("utf-8", errors="replace")))
        return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

"""Milestones as Ray tasks (executor.kind "ray"): the runner's side.

For each milestone the runner pushes the base commit (and the branch to continue, if any) to
`executor.remote`, submits one task (orchestrator_lib/ray_worker.py) and follows it: the hub relays
the task's events to the reporter and its log text into the runner's log folder while it runs, so
`logs -f`, `watch` and the views work as locally. The reply's branch is fetched back and integrated
here, once, like a local milestone's. A task whose node dies is resubmitted to any node from the
branch's last pushed state (a crash retry); a task that gave way to a usage limit is resubmitted
after the pause, preferring its node, where its worktree and its agent's session files are.

The workers get this package and advanced.py through Ray's runtime_env `py_modules`, so they need
only Python, requirements.txt and requirements-ray.txt installed; secrets never travel with a task.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import advanced
import orchestrator_lib
from advanced import WorktreeManager
from orchestrator_lib import budget, files, git, ray_worker, redact
from orchestrator_lib import config as configuration
from orchestrator_lib.errors import UsageError
from orchestrator_lib.pipeline import Job, MilestoneResult, Paused, Progress, Services
from orchestrator_lib.ray_hub import Hub, LogText, Reply, TaskSpec
from orchestrator_lib.state import MilestoneState, update

log = logging.getLogger("orchestrator.ray")
STOP_GRACE_SECONDS = 60  # a stopped task that does not answer by then is cancelled
# Worker-side facts that mean nothing here: a second Ctrl-C must not kill a local process of that pid.
_WORKER_ONLY = ("agent_pid", "agent_started", "worktree")


class RayExecutor:
    """Connects on the first milestone (not at start-up: `status` and friends never need Ray)."""

    def __init__(self, config: configuration.Config, root: Path) -> None:
        self.cfg, self.root = config, root
        self._lock = threading.Lock()
        self._hub: Any = None
        self.task: Any = None
        self.published = threading.Lock()  # one push to the remote at a time: two of one base collide
        self.bases: set[str] = set()

    def run(self, services: Services, job: Job) -> MilestoneResult:
        return Dispatch(self, services, job, self.connect()).run()

    def connect(self) -> Any:
        with self._lock:
            if self._hub is None:
                connect(self.cfg.executor.address)
                here = ray.get_runtime_context().get_node_id()
                pinned = NodeAffinitySchedulingStrategy(here, soft=False)  # the hub dies with its runner
                self._hub = ray.remote(Hub).options(num_cpus=0, scheduling_strategy=pinned).remote()
                self.task = ray.remote(ray_worker.run_task)
            return self._hub

    def close(self) -> None:
        if self._hub is not None:
            ray.shutdown()  # the driver's tasks end with it: a later --resume resubmits them
            self._hub = None

    def options(self, prefer: str) -> dict[str, Any]:
        return task_options(self.cfg.executor.resources, prefer)


def connect(address: str) -> None:
    if ray.is_initialized():
        return
    modules = {"py_modules": [orchestrator_lib, advanced]}  # the workers run this very code
    notes = logging.getLogger("ray")  # Ray's notes to the run log: the terminal is for status lines
    notes.handlers.clear()
    notes.propagate = True
    try:
        # configure_logging=False: Ray's notes go to the run log, not the terminal
        ray.init(address=address, runtime_env=modules, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"cannot connect to the Ray cluster at executor.address {address!r}: {e} "
            "(start one with `ray start --head`; README: Past one machine)"
        ) from None


def task_options(resources: Any, prefer: str) -> dict[str, Any]:
    """Ray's options for one milestone task: CPU, GPU and memory have their own names in Ray."""
    custom = dict(resources)
    opts: dict[str, Any] = {"num_cpus": custom.pop("CPU", 0), "max_retries": 0}  # retries are ours, counted
    if "GPU" in custom:
        opts["num_gpus"] = custom.pop("GPU")
    if "memory" in custom:
        opts["memory"] = custom.pop("memory")
    opts["resources"] = custom
    if prefer:
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(prefer, soft=True)
    return opts


class Dispatch:
    """One milestone on the cluster, from the first submission to its branch fetched back."""

    def __init__(self, ex: RayExecutor, s: Services, job: Job, hub: Any) -> None:
        self.ex, self.s, self.job, self.hub = ex, s, job, hub
        self.m = job.milestone
        self.record = job.previous or MilestoneState(id=self.m.id, stage=self.m.stage, title=self.m.title)
        self.stop = s.stop_for(self.m.id)
        self.remote = ex.cfg.executor.remote or ""
        self.branch = WorktreeManager.branch_for(self.m.id)

    def run(self) -> MilestoneResult:
        refused = self._publish()
        if refused is not None:
            return refused
        prefer, job = self.record.node, self.job
        while True:
            over_cap = self.s.budget.refusal(self.m.stage) if self.s.budget is not None else None
            if over_cap:  # the run's or stage's cap: nothing more is sent to the cluster
                return MilestoneResult(self.m.id, "interrupted", over_cap)
            if not self.s.rate_limits.wait_if_paused(self.stop):  # one limit holds every dispatch
                return MilestoneResult(self.m.id, "interrupted", "stopped while waiting for the usage limit")
            reply = self._once(prefer, job)
            job = self.job._replace(previous=update(self.record, status="interrupted"), reuse_branch=True)
            if isinstance(reply, str):
                failed = self._crashed(reply)
                if failed is not None:
                    return failed
                prefer = ""
            elif reply.paused_until:
                self.s.rate_limits.pause_until(reply.paused_until, reply.pause_reason)
                prefer = reply.node  # Claude's session files live there: --resume works
            else:
                self._refused_there(reply.result)
                return self._bring_back(reply)

    def _refused_there(self, result: MilestoneResult) -> None:
        """A worker refused a start for the run's or stage's cap: the runner's ledger says so too, so the
        run ends with "budget reached" once the running agents finish, as locally."""
        if self.s.budget is not None and result.reason.startswith(budget.REACHED):
            self.s.budget.refusal(self.m.stage)

    def _publish(self) -> MilestoneResult | None:
        """The base, and the branch to continue unless the remote holds a later state of it."""
        with self.ex.published:
            return self._publish_locked()

    def _publish_locked(self) -> MilestoneResult | None:
        base, root = self.job.base, self.s.root
        refs = [] if base in self.ex.bases else [f"+{base}:{ray_worker.BASE_REFS}/{base}"]
        local = git.rev_parse(root, f"refs/heads/{self.branch}")
        ahead = bool(local) and git.count_commits(root, base, self.branch)
        if ahead and not self.job.reuse_branch:
            return MilestoneResult(
                self.m.id,
                "blocked",
                f"branch {self.branch} already exists with {ahead} commit(s) not on the base; "
                "continue it with --resume, or remove it with `clean --force` (that drops its work)",
            )
        tip = git.remote_tip(root, self.remote, f"refs/heads/{self.branch}")
        if not self.job.reuse_branch and tip:
            refs.append(f":refs/heads/{self.branch}")  # a fresh run starts from the base
        elif self.job.reuse_branch and local and local != tip and not self._remote_is_later(local, tip):
            refs.append(f"+refs/heads/{self.branch}:refs/heads/{self.branch}")
        if refs:
            git.push(root, self.remote, *refs)
        self.ex.bases.add(base)
        return None

    def _remote_is_later(self, local: str, tip: str | None) -> bool:
        """A runner that died mid-task: its worker pushed past the branch this checkout has."""
        if not tip:
            return False
        git.fetch(self.s.root, self.remote, f"+refs/heads/{self.branch}:refs/orchestrator/remote/{self.branch}")
        return git.is_ancestor(self.s.root, local, tip)

    def _once(self, prefer: str, job: Job) -> Reply | str:
        """One task: its reply, or why it was lost (its node or worker died)."""
        key = f"{self.m.id}#{os.getpid()}-{time.monotonic_ns()}"
        cfg = self.ex.cfg
        name, email = (git.config_value(self.s.root, setting) for setting in ("user.name", "user.email"))
        spec = TaskSpec(
            key, job, configuration.to_data(cfg), self.s.config_file.name, self.remote,
            cfg.executor.work_dir, self.s.worktrees.base_branch, (name, email),
        )  # fmt: skip
        self.s.emit(Progress(self.m.id, {"role": "queued", "node": ""}))
        self._share_spend()
        ref = self.ex.task.options(**self.ex.options(prefer)).remote(spec, self.hub)
        try:
            return self._follow(ref, key)
        except ray.exceptions.RayTaskError as e:  # our own code failed there: not a node fault
            return _local_reply(MilestoneResult(self.m.id, "failed", f"internal error on a Ray worker: {e}"))
        except ray.exceptions.RayError as e:
            log.warning("milestone %s: its Ray task was lost: %r", self.m.id, e)
            return f"its Ray task was lost ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        finally:
            self.hub.forget.remote(key)

    def _follow(self, ref: Any, key: str) -> Reply:
        stopped_at = 0.0
        while True:
            ready, _ = ray.wait([ref], timeout=0.3)
            self._drain(key)
            if ready:
                reply: Reply = ray.get(ref)
                return reply
            if self.stop.is_set() and not stopped_at:
                self.hub.stop.remote(key)
                stopped_at = time.monotonic()
            if stopped_at and time.monotonic() - stopped_at > STOP_GRACE_SECONDS:
                ray.cancel(ref, force=True)
                return Reply(
                    MilestoneResult(self.m.id, "interrupted", "stopped (its Ray task was cancelled)"), "", 0, "", ""
                )

    def _share_spend(self) -> None:
        ledger = self.s.budget
        if ledger is not None:  # the caps are checked on the worker, against the whole run's spend
            self.hub.spend.remote(ledger.run_total(), self.m.stage, ledger.stage_total(self.m.stage))

    def _drain(self, key: str) -> None:
        self._share_spend()
        for item in ray.get(self.hub.take.remote(key), timeout=120):
            if isinstance(item, LogText):
                self._write_log(item)
            else:
                self._relay(item)

    def _write_log(self, item: LogText) -> None:
        path = self.s.log_dir / item.name
        with files.open_private(path) as f:
            f.write(redact.active().mask(item.text))

    def _relay(self, event: object) -> None:
        if isinstance(event, Progress):
            changes = {k: v for k, v in event.changes.items() if k not in _WORKER_ONLY}
            self.record = update(self.record, **changes)
            if changes:
                self.s.emit(Progress(self.m.id, changes))
            return
        if isinstance(event, Paused):
            self.s.rate_limits.pause_until(event.until, event.reason)
            self.hub.pause.remote(event.until)  # every worker gives way at its next agent start
        self.s.emit(event)

    def _crashed(self, why: str) -> MilestoneResult | None:
        """A lost task counts as a crash of the milestone, resubmitted within retry_attempts (at least once)."""
        crashes = self.record.crashes + 1
        self.record = update(self.record, crashes=crashes, node="")
        self.s.emit(Progress(self.m.id, {"crashes": crashes, "node": ""}))
        self._note(f"{why}; resubmitting from the last pushed state (crash {crashes})")
        if crashes > max(1, self.ex.cfg.retry_attempts):  # a lost node is no fault of the milestone: once at least
            return MilestoneResult(self.m.id, "failed", f"{why} (crashes: {crashes}, retry_attempts)")
        return None

    def _bring_back(self, reply: Reply) -> MilestoneResult:
        """The pushed branch into this repository, where it is integrated like a local one."""
        if not reply.tip:
            return reply.result
        root, worktrees = self.s.root, self.s.worktrees
        if git.worktree_of_branch(root, self.branch) is not None:
            worktrees.remove(self.m.id, delete_branch=False)  # an earlier local run's: the remote's is later
        if not git.branch_exists(root, self.branch):
            worktrees.owned.add("branch", self.branch)
        git.fetch(root, self.remote, f"+refs/heads/{self.branch}:refs/heads/{self.branch}")
        if git.rev_parse(root, f"refs/heads/{self.branch}") != reply.tip:
            return MilestoneResult(self.m.id, "failed", f"{self.branch} on executor.remote moved while it was fetched")
        return reply.result

    def _note(self, text: str) -> None:
        self._write_log(LogText(f"{self.m.id}.log", f"[orchestrator] {text}\n"))


def _local_reply(result: MilestoneResult) -> Reply:
    return Reply(result, "", 0.0, "", "")


def check_workers(config: configuration.Config) -> str | None:
    """--validate-only: a tiny task, placed like a milestone's, checks the agent's executable there."""
    connect(config.executor.address)
    check = ray.remote(ray_worker.check_agent).options(**task_options(config.executor.resources, ""))
    try:
        found: str | None = ray.get(check.remote(configuration.to_data(config)), timeout=120)
    except ray.exceptions.GetTimeoutError:
        wanted = dict(config.executor.resources)
        return f"no Ray worker ran a check within 120 s: does a node offer executor.resources {wanted}?"
    finally:
        ray.shutdown()
    return found

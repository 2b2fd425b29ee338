"""The four mechanisms of the design card.

RateLimitManager  classify agent outcomes, pause every task for a usage limit, back off transients
SystemMonitor     hold new agent starts while CPU, memory or disk are short (psutil)
WorktreeManager   worktrees, branches, the stage's integration and moving the base branch
MilestoneValidator the checks after an agent run: exit criteria, tests, lint, quality gates

This module never imports orchestrator.py. Clocks, sleeps and probes are constructor
parameters so tests run instantly and deterministically.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import tenacity

from orchestrator_lib import git, limits, proc, safe_delete
from orchestrator_lib.agents import AgentRun
from orchestrator_lib.config import Config, MonitorConfig, ValidationConfig
from orchestrator_lib.errors import OrchestratorError
from orchestrator_lib.plan import Check, Milestone
from orchestrator_lib.redact import EMPTY, Leak, Redactor
from orchestrator_lib.state import Ownership

Sleep = Callable[[float], bool]  # sleeps up to N seconds; True when woken by a stop


class RateLimitManager:
    """Shared by every worker: the account is shared, so one usage limit pauses all tasks."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time, sleep: Sleep | None = None) -> None:
        self._config = config
        self._clock = clock
        self._sleep: Sleep = sleep or threading.Event().wait  # time.sleep with a bool result
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self.reason = ""

    def classify(self, preset: str, run: AgentRun) -> limits.Classification:
        now = dt.datetime.fromtimestamp(self._clock()).astimezone()
        result = limits.classify(preset, run.returncode, run.output, now)
        if run.killed == "stopped" and result.kind not in ("usage_limit", "auth"):
            return limits.Classification("failed", None, "stopped")
        if run.killed and result.kind not in ("usage_limit", "auth"):
            return limits.Classification("transient", None, f"killed by the {run.killed} watchdog")
        return result

    def pause(self, reset_at: float | None, reason: str, exact: bool = False) -> float:
        """Hold every new agent start until the limit lifts; returns when starts resume.

        A reset read from text has minute precision (Claude rounds it down), so it gets
        `text_reset_margin_seconds` on top of the grace; an exact epoch gets the grace only.
        """
        rl = self._config.rate_limit
        now = self._clock()
        margin = rl.grace_seconds + (0 if exact else rl.text_reset_margin_seconds)
        until = None if reset_at is None else reset_at + margin
        if until is None or until <= now:
            until = now + self._config.claude_rate_limit_wait  # no usable reset time: probe later
        return self.pause_until(until, reason)

    def pause_until(self, until: float, reason: str) -> float:
        """Hold starts until `until` (epoch seconds), e.g. a pause a restarted runner found in state."""
        with self._lock:
            if until > self._paused_until:
                self._paused_until, self.reason = until, reason
            return self._paused_until

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def wait_if_paused(self, stop: threading.Event) -> bool:
        """Block while paused; False if stopped. Sleeps in slices of a second at most, so a
        stop of this task, a clock jump or a later pause by another task is noticed."""
        while not stop.is_set():
            remaining = self._paused_until - self._clock()
            if remaining <= 0:
                return True
            if self._sleep(min(remaining, 1.0)):
                return False
        return False

    def retrying(self, attempts: int, stop: threading.Event | None = None) -> tenacity.Retrying:
        """Exponential backoff with jitter for transient errors, `attempts` tries in all.

        The backoff ends early when `stop` is set, so a stopped task never sleeps it out."""
        rl = self._config.rate_limit
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, attempts)),
            # initial, 2×, 4× … capped, plus up to a second of jitter so parallel tasks spread out.
            wait=tenacity.wait_exponential(multiplier=rl.backoff_initial_seconds, max=rl.backoff_max_seconds)
            + tenacity.wait_random(0, 1),
            retry=tenacity.retry_if_result(lambda outcome: bool(getattr(outcome, "retryable", False))),
            sleep=lambda seconds: self._nap(seconds, stop),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )

    def _nap(self, seconds: float, stop: threading.Event | None) -> None:
        deadline = self._clock() + seconds
        while not (stop and stop.is_set()):
            remaining = deadline - self._clock()
            if remaining <= 0 or self._sleep(min(remaining, 1.0)):
                return


class Sample(NamedTuple):
    cpu_percent: float
    memory_percent: float
    disk_free_gb: float


class Probe(Protocol):
    def cpu_percent(self) -> float: ...
    def memory_percent(self) -> float: ...
    def disk_free_gb(self, path: Path) -> float: ...
    def rss(self, pid: int, tree: bool) -> int: ...  # bytes; 0 when the process is gone


class PsutilProbe:
    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(interval=None)  # the first reading is meaningless: prime it

    def cpu_percent(self) -> float:
        return float(self._psutil.cpu_percent(interval=None))

    def memory_percent(self) -> float:
        return float(self._psutil.virtual_memory().percent)

    def disk_free_gb(self, path: Path) -> float:
        return shutil.disk_usage(path).free / 1024**3

    def rss(self, pid: int, tree: bool) -> int:
        """Resident memory of a process, with `tree` of all its descendants too (an agent's test runs)."""
        psutil = self._psutil
        try:
            top = psutil.Process(pid)
            processes = [top, *top.children(recursive=True)] if tree else [top]
        except psutil.Error:
            return 0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass  # exited while we looked
        return total


CPU_SAMPLES = 5
CPU_READING_GAP = 1.0  # seconds


class SystemMonitor:
    """Gates every agent start on CPU (averaged), memory and free disk; running agents continue.

    Also measures what the metrics sampler records: the runner's and each agent tree's memory.
    """

    def __init__(
        self,
        config: MonitorConfig,
        root: Path,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        self._config = config
        self._root = root
        self._probe = probe or PsutilProbe()
        self._clock = clock
        self._sleep: Sleep = sleep or threading.Event().wait
        self._cpu: collections.deque[float] = collections.deque(maxlen=CPU_SAMPLES)
        self._cpu_read_at = -float("inf")
        self._lock = threading.Lock()

    def sample(self) -> Sample:
        """CPU is the average of the last readings, so one busy second does not hold every start."""
        with self._lock:
            if self._clock() - self._cpu_read_at >= CPU_READING_GAP or not self._cpu:
                # psutil measures since its previous call: readings closer than this are noise
                self._cpu.append(self._probe.cpu_percent())
                self._cpu_read_at = self._clock()
            cpu = sum(self._cpu) / len(self._cpu)
        return Sample(cpu, self._probe.memory_percent(), self._probe.disk_free_gb(self._root))

    def agent_rss(self, pids: Mapping[str, int]) -> dict[str, int]:
        """Bytes held by each agent's whole process tree, by milestone."""
        return {mid: self._probe.rss(pid, tree=True) for mid, pid in pids.items()}

    def own_rss(self) -> int:
        return self._probe.rss(os.getpid(), tree=False)

    def hold_reason(self, sample: Sample | None = None) -> str | None:
        s = sample or self.sample()
        c = self._config
        if s.disk_free_gb < c.min_free_disk_gb:
            return _disk_reason(s.disk_free_gb, c)
        if s.memory_percent > c.max_memory_percent:
            return f"memory {s.memory_percent:.0f}% is above monitor.max_memory_percent {c.max_memory_percent:g}"
        if s.cpu_percent > c.max_cpu_percent:
            return f"CPU {s.cpu_percent:.0f}% (average) is above monitor.max_cpu_percent {c.max_cpu_percent:g}"
        return None

    def disk_shortage(self) -> str | None:
        """Free disk alone (before a worktree is made): the reason when below monitor.min_free_disk_gb."""
        free = self._probe.disk_free_gb(self._root)
        return _disk_reason(free, self._config) if free < self._config.min_free_disk_gb else None

    def wait_until_ok(self, stop: threading.Event, on_hold: Callable[[str | None], None]) -> str | None:
        """None once resources allow a start; the reason if they did not within max_wait_minutes."""
        deadline = self._clock() + self._config.max_wait_minutes * 60
        reason = self.hold_reason()
        while reason:
            on_hold(reason)
            if self._clock() >= deadline:
                return f"did not recover within {self._config.max_wait_minutes:g} min: {reason}"
            if self._sleep(min(self._config.interval_seconds, max(0.1, deadline - self._clock()))) or stop.is_set():
                return "stopped"
            reason = self.hold_reason()
        on_hold(None)
        return None


def _disk_reason(free_gb: float, c: MonitorConfig) -> str:
    return f"free disk {free_gb:.1f} GB is below monitor.min_free_disk_gb {c.min_free_disk_gb:g}"


class Integration(NamedTuple):
    ok: bool
    commit: str  # the integration result (or "" when it failed)
    merges: dict[str, str]  # milestone id -> its merge commit
    reason: str
    failed: str = ""  # the milestone whose merge failed
    conflicted: tuple[str, ...] = ()  # its conflicted paths, when the merge conflicted
    notes: tuple[str, ...] = ()  # what the resolver fixed, for the people watching


class _MergeFailure(NamedTuple):
    reason: str
    conflicted: tuple[str, ...] = ()


Resolver = Callable[[Path, Sequence[str], str], bool]  # (worktree, conflicted paths, failure) -> fixed?


class WorktreeManager:
    """Every git write the runner makes goes through here; the user's checkout is only ever fast-forwarded."""

    INTEGRATION_BRANCH = "orchestrator/integration"

    def __init__(
        self,
        root: Path,
        worktree_dir: Path,
        base_branch: str,
        tasks_file: str,
        tasks_ours: Callable[[Path], bool] = lambda _checkout: True,
        owned: Ownership | None = None,
        teardown: Callable[[str, Path], None] | None = None,  # (id, worktree): worktree.teardown
    ) -> None:
        self.root = root
        self.dir = worktree_dir
        self.base_branch = base_branch
        self.tasks_file = tasks_file
        self.tasks_ours = tasks_ours  # False when the user has edited the generated file in that checkout
        self.owned = owned or Ownership(root)
        self._teardown = teardown
        # Held by every git command that adds, removes or lists worktrees or deletes a branch: git
        # reads every worktree's admin folder then, and fails on one another thread is half-way adding
        # ("failed to read .git/worktrees/2B/commondir"). Dependencies mode merges while tasks start.
        self._lock = threading.RLock()

    @staticmethod
    def branch_for(milestone_id: str) -> str:
        return f"milestone/{milestone_id}"

    def path_for(self, milestone_id: str) -> Path:
        return self.dir / milestone_id

    def base_commit(self) -> str:
        sha = git.rev_parse(self.root, f"refs/heads/{self.base_branch}")
        if sha is None:
            raise OrchestratorError(f"base branch `{self.base_branch}` does not exist (set base_branch in the config)")
        return sha

    def ensure(self, milestone_id: str, base: str, reuse: bool) -> Path:
        """The milestone's worktree: reused when it is ours, created from `base` when new."""
        # Serialised: `git worktree prune` in one thread deletes the admin folder of a
        # worktree another thread is still adding (seen as exit 128 with 8 parallel tasks).
        with self._lock:
            return self._ensure(milestone_id, base, reuse)

    def _ensure(self, milestone_id: str, base: str, reuse: bool) -> Path:
        path, branch = self.path_for(milestone_id), self.branch_for(milestone_id)
        registered = git.worktree_of_branch(self.root, branch)
        if registered is not None:
            if registered.resolve() != path.resolve():
                raise OrchestratorError(f"branch {branch} is checked out at {registered}; remove that worktree first")
            return path
        git.prune_worktrees(self.root)
        if path.exists():
            self._set_aside(path)
        if git.branch_exists(self.root, branch):
            ahead = git.count_commits(self.root, base, branch)
            if ahead and not reuse:
                raise OrchestratorError(
                    f"branch {branch} already exists with {ahead} commit(s) not on {self.base_branch}; "
                    "continue it with --resume, or remove it with `clean --force` (that drops its work)"
                )
            self._own_worktree(path)
            git.add_worktree(self.root, path, branch, None)
        else:
            self.owned.add("branch", branch)
            self._own_worktree(path)
            git.add_worktree(self.root, path, branch, base)
        return path

    def _own_worktree(self, path: Path) -> None:
        self.owned.add("worktree", str(path.resolve()))

    def _remove_worktree(self, path: Path) -> None:
        safe_delete.remove_worktree(self.root, path, allowed_under=self.dir)
        self.owned.drop("worktree", str(path.resolve()))

    def _delete_branch(self, branch: str) -> None:
        git.delete_branch(self.root, branch, force=True)
        self.owned.drop("branch", branch)

    def owns_branch(self, branch: str) -> bool:
        return branch in self.owned.names("branch")

    def _set_aside(self, path: Path) -> None:
        # An unregistered folder where a worktree should be (a kill during `worktree add`):
        # move it aside instead of deleting, in case it holds something.
        aside = path.with_name(f"{path.name}.orphan-{int(time.time())}")
        path.rename(aside)

    def remove(self, milestone_id: str, delete_branch: bool) -> None:
        with self._lock:
            self._remove(milestone_id, delete_branch)

    def prune(self) -> None:
        with self._lock:
            git.prune_worktrees(self.root)

    def _remove(self, milestone_id: str, delete_branch: bool) -> None:
        path, branch = self.path_for(milestone_id), self.branch_for(milestone_id)
        if git.worktree_of_branch(self.root, branch) is not None:
            self._tear_down(milestone_id, path)
            self._remove_worktree(path)
        merged = git.branch_exists(self.root, branch) and git.is_ancestor(self.root, branch, self.base_branch)
        if delete_branch and merged and self.owns_branch(branch):
            self._delete_branch(branch)  # ours, and on the base branch already: nothing is lost

    def _tear_down(self, name: str, path: Path) -> None:
        if self._teardown is not None and path.is_dir():
            self._teardown(name, path)

    def integrate(
        self,
        items: Sequence[tuple[str, str]],
        validate: Callable[[Path], str | None],
        resolve: Resolver | None,
        prepare: Callable[[Path], str | None] | None = None,
    ) -> Integration:
        """Merge the branches in id order in a throwaway worktree made ready by `prepare`; validate each merge."""
        path = self._fresh_integration_worktree()
        unprepared = prepare(path) if prepare else None
        if unprepared:
            return Integration(False, "", {}, f"the integration worktree could not be set up: {unprepared}")
        merges: dict[str, str] = {}
        notes: list[str] = []
        for milestone_id, title in items:
            failure = self._merge_one(path, milestone_id, title, validate, resolve, notes)
            if failure:
                git.abort_merge(path)
                return Integration(False, "", merges, failure.reason, milestone_id, failure.conflicted, tuple(notes))
            merges[milestone_id] = git.rev_parse(path, "HEAD") or ""
        return Integration(True, git.rev_parse(path, "HEAD") or "", merges, "", notes=tuple(notes))

    def _merge_one(
        self,
        path: Path,
        mid: str,
        title: str,
        validate: Callable[[Path], str | None],
        resolve: Resolver | None,
        notes: list[str],
    ) -> _MergeFailure | None:
        branch = self.branch_for(mid)
        parents = [git.rev_parse(path, "HEAD") or "", git.rev_parse(path, branch) or ""]
        messages = [f"Merge milestone {mid}: {title}", f"Milestone: {mid}"]
        conflicted = tuple(git.merge_no_ff(path, branch, messages[0], messages[1:]))
        if conflicted:
            if resolve is None or not resolve(path, conflicted, ""):
                return _MergeFailure(f"merging {branch} conflicts in {', '.join(conflicted)}", conflicted)
            if _has_conflict_markers(path, conflicted):
                return _MergeFailure(f"the resolver left conflict markers in {', '.join(conflicted)}", conflicted)
            git.commit_merge(path, parents, messages)
            notes.append(f"{mid}: the resolver fixed the conflicts in {', '.join(conflicted)}")
        failure = _validated(path, validate)
        if failure and resolve is not None and resolve(path, [], failure):
            git.commit_all(path, f"Fix integration of milestone {mid}\n\nMilestone-Fix: {mid}")
            failure = _validated(path, validate)
            notes += [] if failure else [f"{mid}: the resolver fixed the tests after the merge"]
        return _MergeFailure(f"after merging {branch} the validation fails: {failure}") if failure else None

    def _fresh_integration_worktree(self) -> Path:
        with self._lock:
            return self._fresh_integration()

    def _fresh_integration(self) -> Path:
        path = self.dir / "_integration"
        if git.worktree_of_branch(self.root, self.INTEGRATION_BRANCH) is not None:
            self._tear_down("_integration", path)
            self._remove_worktree(path)
        git.prune_worktrees(self.root)
        if path.exists():
            self._set_aside(path)
        if git.branch_exists(self.root, self.INTEGRATION_BRANCH):
            self._delete_branch(self.INTEGRATION_BRANCH)  # ours, rebuilt each stage
        self.owned.add("branch", self.INTEGRATION_BRANCH)
        self._own_worktree(path)
        git.add_worktree(self.root, path, self.INTEGRATION_BRANCH, self.base_commit())
        return path

    @property
    def integration_path(self) -> Path:
        return self.dir / "_integration"

    def drop_integration(self) -> None:
        with self._lock:
            self._drop_integration()

    def _drop_integration(self) -> None:
        if git.worktree_of_branch(self.root, self.INTEGRATION_BRANCH) is not None:
            self._tear_down("_integration", self.integration_path)
            self._remove_worktree(self.integration_path)
        if git.branch_exists(self.root, self.INTEGRATION_BRANCH):
            self._delete_branch(self.INTEGRATION_BRANCH)

    def keep_integration(self, name: str) -> str:
        """Keep a finished integration the runner could not move the base branch to."""
        sha = git.rev_parse(self.root, self.INTEGRATION_BRANCH) or ""
        self.owned.add("branch", name)
        with self._lock:
            git.git(self.root, "branch", "-f", name, sha)
        return name

    def move_base(self, old: str, new: str) -> list[str]:
        """Move the base branch from old to new; returns the user's files that block it ([] = moved)."""
        with self._lock:
            checkout = git.worktree_of_branch(self.root, self.base_branch)
        if checkout is None:
            git.update_ref(self.root, self.base_branch, new, old)
            return []
        touched = set(git.changed_between(checkout, old, new))
        _undo_half_applied(checkout, old, new, [p for p in git.status_paths(checkout) if p in touched])
        dirty = git.status_paths(checkout)
        ours = self.tasks_ours(checkout)
        blocking = sorted(p for p in dirty if p in touched and not (p == self.tasks_file and ours))
        if blocking:
            return blocking
        self._release_tasks_file(checkout, old)
        git.merge_ff_only(checkout, new)
        return []

    def _release_tasks_file(self, checkout: Path, head: str) -> None:
        # TASKS.md as the runner last wrote it (checked by move_base: never a user's edit): put it
        # back to the committed version so the fast-forward can update it. It is rendered again right after.
        if not git.has_changes(checkout, self.tasks_file):
            return
        if git.show_file(checkout, head, self.tasks_file) is None:
            (checkout / self.tasks_file).unlink(missing_ok=True)
        else:
            git.git(checkout, "checkout", head, "--", self.tasks_file)


def _undo_half_applied(checkout: Path, old: str, new: str, paths: Sequence[str]) -> None:
    """A fast-forward killed half-way (say, a stopped container) leaves files of `new` in the checkout
    while the branch has not moved. They are not the user's edits: put them back so it can run again.
    Only a file holding exactly what `new` brings (or missing where `new` deletes it) is touched."""
    for path in paths:
        if _blob(checkout, f"{new}:{path}") != _working_blob(checkout, path):
            continue  # the user's own change: it blocks the move, and is never touched
        if _blob(checkout, f"{old}:{path}"):
            git.git(checkout, "checkout", old, "--", path)
        else:
            git.git(checkout, "rm", "-q", "--cached", "--ignore-unmatch", "--", path)
            (checkout / path).unlink(missing_ok=True)


def _blob(cwd: Path, spec: str) -> str:
    out = git.git(cwd, "rev-parse", "--verify", "--quiet", spec, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def _working_blob(cwd: Path, path: str) -> str:
    if not (cwd / path).is_file():
        return ""
    return git.git(cwd, "hash-object", "--", path).stdout.strip()


def _validated(path: Path, validate: Callable[[Path], str | None]) -> str | None:
    # The merge is committed: whatever the tests leave behind is not work, and must not
    # be swept into the next commit (a resolver fix, the TASKS.md commit).
    failure = validate(path)
    git.discard_changes(path)
    return failure


def _has_conflict_markers(cwd: Path, paths: Sequence[str]) -> bool:
    return any(has_conflict_markers((cwd / p).read_text(errors="replace")) for p in paths if (cwd / p).is_file())


_OURS = re.compile(r"^<{7}(?: |\r?$)", re.MULTILINE)
_SPLIT = re.compile(r"^={7}\r?$", re.MULTILINE)
_THEIRS = re.compile(r"^>{7}(?: |\r?$)", re.MULTILINE)


def has_conflict_markers(text: str) -> bool:
    """`<<<<<<<`, then a line `=======`, then `>>>>>>>`: not a Markdown heading underline alone."""
    ours = _OURS.search(text)
    split = _SPLIT.search(text, ours.end()) if ours else None
    return bool(split and _THEIRS.search(text, split.end()))


class CheckResult(NamedTuple):
    name: str
    ok: bool
    output: str
    purge: bool = False  # a failure whose content must not stay in the branch's history


class Verdict(NamedTuple):
    ok: bool
    results: tuple[CheckResult, ...]

    def summary(self) -> str:
        failed = [r.name for r in self.results if not r.ok]
        return f"{len(self.results) - len(failed)}/{len(self.results)} checks passed" + (
            f"; failing: {'; '.join(failed)}" if failed else ""
        )

    def failure_output(self) -> str:
        return "\n\n".join(f"$ {r.name}\n{r.output.strip()}" for r in self.results if not r.ok)

    def report(self) -> str:
        """Every check with its output, for the milestone's log."""
        return "\n".join(
            f"{'ok' if r.ok else 'FAILED'}: {r.name}" + (f"\n{r.output.rstrip()}" if r.output.strip() else "")
            for r in self.results
        )

    def must_purge(self) -> bool:
        return any(r.purge and not r.ok for r in self.results)


class MilestoneValidator:
    """Checks after an agent run. Never trusts an exit code alone: looks at git and the criteria."""

    def __init__(self, config: ValidationConfig, env: Mapping[str, str], redactor: Redactor = EMPTY) -> None:
        self._config = config
        self._env = env
        self._redactor = redactor

    # `task_env`: the task's own variables (ORCHESTRATOR_PORT_BASE, ORCHESTRATOR_TASK_SLUG).
    def run_checks(self, checks: Sequence[Check], cwd: Path, task_env: Mapping[str, str] = {}) -> Verdict:
        results = [self._shell(c.command, cwd, task_env) for c in checks if c.command]
        return Verdict(all(r.ok for r in results), tuple(results))

    def after_agent(self, m: Milestone, cwd: Path, base: str, task_env: Mapping[str, str] = {}) -> Verdict:
        results = [self._shell(c.command, cwd, task_env) for c in m.exit_criteria if c.command]
        for command in (self._config.test_command, self._config.lint_command):
            if command:
                results.append(self._shell(command, cwd, task_env))
        results += self._quality(m, cwd, base)
        return Verdict(all(r.ok for r in results), tuple(results))

    def merged(self, cwd: Path, task_env: Mapping[str, str] = {}) -> str | None:
        if not self._config.test_command:
            return None
        result = self._shell(self._config.test_command, cwd, task_env)
        return None if result.ok else f"`{result.name}` failed:\n{result.output[-3000:]}"

    def _shell(self, command: str | None, cwd: Path, task_env: Mapping[str, str]) -> CheckResult:
        assert command
        env = {**self._env, **task_env}
        out = proc.run_shell_check(command, cwd=cwd, env=env, timeout=self._config.timeout_minutes * 60)
        return CheckResult(command, out.returncode == 0, self._redact(out.stdout + out.stderr)[-8000:])

    def _redact(self, text: str) -> str:
        # Check output lands in logs and prompts: secrets never do.
        return self._redactor.mask(text)

    def secrets_in_worktree(self, cwd: Path) -> Verdict | None:
        """Before anything is committed: a failing verdict naming each file and line holding a secret.

        Runs on the files themselves, before `git add`, because a staged blob is already an
        object in the user's repository.
        """
        if not self._config.forbid_secrets:
            return None
        found = [f"{path}:{leak.line}: {leak.kind}: {leak.masked_line}" for path, leak in self._leaks(cwd)]
        if not found:
            return None
        note = (
            "secrets written into files (nothing was committed): "
            + "; ".join(found[:20])
            + ". Remove them and read them from the environment instead"
        )
        return Verdict(False, (CheckResult(SECRETS_CHECK, False, note),))

    def _leaks(self, cwd: Path) -> list[tuple[str, Leak]]:
        leaks = []
        for path in git.status_paths(cwd):
            for leak in self._redactor.find(_read_for_scan(cwd / path)):
                leaks.append((path, leak))
        return leaks

    def _quality(self, m: Milestone, cwd: Path, base: str) -> list[CheckResult]:
        """The quality gates, each on by default and switched in validation.*."""
        c = self._config
        changed = git.changed_between(cwd, base, "HEAD")
        present = [p for p in changed if (cwd / p).is_file()]
        gates = [
            self._scope(m, changed) if c.enforce_scope else None,
            self._size(cwd, base, present) if c.max_file_kb > 0 else None,
            self._markers(cwd, present) if c.forbid_conflict_markers else None,
            self._no_secrets(cwd, present) if c.forbid_secrets else None,
        ]
        return [g for g in gates if g is not None]

    def _scope(self, m: Milestone, changed: Sequence[str]) -> CheckResult | None:
        named = named_paths(m)
        if not named or not changed:
            return None
        inside = [p for p in changed if any(p == n or p.startswith(n.rstrip("/") + "/") for n in named)]
        return CheckResult(
            "change is in the milestone's scope",
            bool(inside),
            ""
            if inside
            else f"the milestone's Tasks name {', '.join(sorted(named))} but the change only touches "
            f"{', '.join(list(changed)[:20])} (validation.enforce_scope)",
        )

    def _size(self, cwd: Path, base: str, paths: Sequence[str]) -> CheckResult:
        limit = self._config.max_file_kb * 1024
        big = [p for p in paths if (cwd / p).stat().st_size > limit and (git.blob_size(cwd, base, p) or 0) <= limit]
        note = f"files over {self._config.max_file_kb} KB (validation.max_file_kb): {', '.join(big)}"
        return CheckResult("file size limit", not big, note if big else "", purge=True)

    def still_conflicted(self, cwd: Path, paths: Sequence[str]) -> list[str]:
        """The files among `paths` that still hold conflict markers (a merge someone was to resolve)."""
        return [p for p in paths if _has_conflict_markers(cwd, [p])]

    def _markers(self, cwd: Path, paths: Sequence[str]) -> CheckResult:
        marked = [p for p in paths if _has_conflict_markers(cwd, [p])]
        note = f"conflict markers (<<<<<<< ======= >>>>>>>) committed in: {', '.join(marked)}"
        return CheckResult("no conflict markers", not marked, note if marked else "")

    def _no_secrets(self, cwd: Path, paths: Sequence[str]) -> CheckResult:
        # The scan before each commit keeps secrets out; this catches a change made another way.
        leaked = [p for p in paths if self._redactor.find(_read_for_scan(cwd / p))]
        note = f"a secret is written in: {', '.join(leaked)}; read it from the environment instead"
        return CheckResult(SECRETS_CHECK, not leaked, note if leaked else "", purge=True)


SECRETS_CHECK = "no secrets in the change"
_SCAN_LIMIT = 16 * 1024 * 1024  # bytes of one file scanned; larger files fail validation.max_file_kb anyway


def _read_for_scan(path: Path) -> str:
    if path.is_symlink() or not path.is_file():
        return ""
    try:
        with open(path, "rb") as f:
            return f.read(_SCAN_LIMIT).decode("utf-8", "replace")
    except OSError:
        return ""


_PATH_SPAN = re.compile(r"`([\w./-]+(?:/|\.[A-Za-z0-9]{1,8}))`")


def named_paths(m: Milestone) -> set[str]:
    """File or folder names a milestone's Tasks name in code spans (`src/app.py`, `docs/`)."""
    return {p.removeprefix("./") for p in _PATH_SPAN.findall(m.tasks) if not p.startswith(("/", "-"))}

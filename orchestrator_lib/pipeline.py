"""One milestone, start to finish: worktree, entry checks, agent, commit, checks, review, remediation.

`run_milestone(services, job) -> MilestoneResult` holds no shared in-process state of its own:
it reports progress through `services.emit` and returns a value; the main thread is the
only writer of state. So it could later run on another machine with the same inputs.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from advanced import CheckResult, MilestoneValidator, RateLimitManager, SystemMonitor, Verdict, WorktreeManager
from orchestrator_lib import (
    agents,
    budget,
    conflicts,
    denials,
    files,
    git,
    launches,
    limits,
    milestone_agent,
    presets,
    prompts,
    redact,
    review,
    transcript,
    worktree_prep,
)
from orchestrator_lib.config import AgentConfig, Config
from orchestrator_lib.errors import OrchestratorError
from orchestrator_lib.plan import Milestone
from orchestrator_lib.state import MilestoneState


class Progress(NamedTuple):
    milestone_id: str
    changes: dict[str, Any]


class Paused(NamedTuple):
    until: float
    reason: str


class Held(NamedTuple):
    reason: str  # "" when resources recovered


class Services(NamedTuple):
    """What a worker may use. None of it writes the state store."""

    config: Config
    root: Path
    rate_limits: RateLimitManager
    monitor: SystemMonitor
    validator: MilestoneValidator
    worktrees: WorktreeManager
    agent_env: Mapping[str, str]
    log_dir: Path
    prompt_dir: Path
    stop_for: Callable[[str], threading.Event]  # set on a global stop or `stop <ID>`
    emit: Callable[[object], None]
    clock: Callable[[], float]
    config_file: Path = Path("orchestrator.config.json")  # named in messages about the config
    budget: budget.Ledger | None = None  # the run's spend (fed by the runner from `emit`) and caps; None: none


class Job(NamedTuple):
    milestone: Milestone
    base: str
    previous: MilestoneState | None
    reuse_branch: bool
    isolation: worktree_prep.Isolation | None = None  # its port block and slug
    conflict: conflicts.Conflict | None = None  # set: bring the branch up to `base` (dependencies mode's merge queue)


class MilestoneResult(NamedTuple):
    id: str
    status: str  # done, failed, blocked, interrupted
    reason: str
    commit: str = ""
    fatal: bool = False  # an auth problem: the whole run stops


class Outcome(NamedTuple):
    kind: str  # limits kinds plus "interrupted"
    message: str
    retryable: bool


@dataclasses.dataclass
class _Tally:
    """Per-milestone counters that survive retries and resumes (seeded from state)."""

    attempts: int = 0
    session_id: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    watchdog_kills: int = 0
    recoveries: int = 0
    crashes: int = 0  # failed runs in a row; with recoveries, carried over when a run resumes
    fresh_since: float = 0.0  # launches before this belong to an earlier, finished run of the milestone
    refused: tuple[str, ...] = ()  # what its agents were refused (permission_denials), in this run
    used: set[str] = dataclasses.field(default_factory=set)  # launches this runner has adopted or passed over

    def add(self, report: limits.AgentReport) -> None:
        self.cost_usd += report.cost_usd or 0.0
        self.input_tokens += report.input_tokens or 0
        self.output_tokens += report.output_tokens or 0

    def fields(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "session_id": self.session_id,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "recoveries": self.recoveries,
            "crashes": self.crashes,
            "permission_denials": self.refused,
        }


class _Context(NamedTuple):
    s: Services
    m: Milestone
    path: Path
    base: str
    tally: _Tally
    isolation: worktree_prep.Isolation | None = None

    @property
    def task_env(self) -> dict[str, str]:
        return self.isolation.env() if self.isolation else {}

    @property
    def setting(self) -> str:
        """The prompt's note on the task's own ports and slug."""
        return self.isolation.note() if self.isolation else ""


def run_milestone(s: Services, job: Job) -> MilestoneResult:
    m, prev = job.milestone, job.previous
    tally = _Tally()
    if prev:
        resumed = prev.status in ("running", "interrupted")  # after a failure, a new run starts afresh
        tally = _Tally(
            prev.attempts,
            prev.session_id,
            prev.cost_usd,
            prev.input_tokens,
            prev.output_tokens,
            recoveries=prev.recoveries if resumed else 0,
            crashes=prev.crashes if resumed else 0,
            fresh_since=0.0 if resumed else prev.finished_at,
        )
    s.emit(
        Progress(
            m.id, {"status": "running", "started_at": s.clock(), "reason": "", "role": "prepare", "finished_at": 0.0}
        )
    )
    if not s.worktrees.path_for(m.id).exists():  # a new worktree needs disk (monitor.min_free_disk_gb)
        held = s.monitor.wait_until_ok(s.stop_for(m.id), lambda reason: s.emit(Held(reason or "")))
        if held:
            return MilestoneResult(m.id, "interrupted" if held == "stopped" else "failed", f"resources: {held}")
    try:
        path = s.worktrees.ensure(m.id, job.base, reuse=job.reuse_branch)
    except OrchestratorError as e:
        return MilestoneResult(m.id, "blocked", str(e))
    s.emit(Progress(m.id, {"branch": s.worktrees.branch_for(m.id), "worktree": str(path)}))
    if git.rev_parse(path, "MERGE_HEAD"):  # a merge of the base that a killed run left half done
        git.abort_merge(path)
    ctx = _Context(s, m, path, job.base, tally, job.isolation)
    if s.config.worktree.setup:
        s.emit(Progress(m.id, {"role": "setup"}))
    unprepared = worktree_prep.prepare(prep_for(ctx), path)
    if unprepared:
        stopped = s.stop_for(m.id).is_set()
        return MilestoneResult(m.id, "interrupted" if stopped else "blocked", unprepared)
    if job.conflict is not None:
        return _update_from_base(ctx, job.conflict)
    entry = s.validator.run_checks(m.entry, path, ctx.task_env)
    if not entry.ok:
        return MilestoneResult(
            m.id, "blocked", "entry requirements not met: " + entry.summary() + "\n" + entry.failure_output()
        )
    result = _implement_and_review(ctx, prev)
    refused = tally.refused if result.status == "failed" else ()  # what the agent was refused: often the cause
    return result._replace(reason=denials.in_reason(result.reason, refused))


def prep_for(ctx: _Context) -> worktree_prep.Prep:
    """Copy, link, setup and teardown of this task's worktree, in its environment, logged to its log."""
    s = ctx.s
    return worktree_prep.Prep(
        s.root,
        s.config.worktree,
        s.config_file,
        {**s.agent_env, **ctx.task_env},
        s.log_dir / f"{ctx.m.id}.log",
        s.stop_for(ctx.m.id),
    )


def _implement_and_review(ctx: _Context, previous: MilestoneState | None) -> MilestoneResult:
    m = ctx.m
    head = git.rev_parse(ctx.path, "HEAD") or ""
    interrupted = previous is not None and previous.status in ("running", "interrupted")
    if interrupted and previous and previous.commit == head and head != ctx.base and not git.status_paths(ctx.path):
        return _review_rounds(ctx, head, None)  # interrupted after its commit: go on with checks and review
    already = git.changed_between(ctx.path, ctx.base, "HEAD") + git.status_paths(ctx.path)
    note = prompts.resume_note("resumed run", already) if already else ""
    outcome = _run_role(
        ctx, "implement", prompts.implement(m, str(ctx.path), note, ctx.setting), resume_session=bool(already)
    )
    if outcome.kind != "ok":
        return _failure(ctx, outcome)
    if not git.changed_between(ctx.path, ctx.base, "HEAD") and not git.status_paths(ctx.path):
        return MilestoneResult(m.id, "failed", "no changes: the agent finished but changed nothing")
    return _review_rounds(ctx, head, _Pending(f"Milestone {m.id}: {m.title}", squash=False))


def _update_from_base(ctx: _Context, conflict: conflicts.Conflict) -> MilestoneResult:
    """The base moved and the branch would conflict with it: the runner starts merging the base into the
    branch, the milestone's own session resolves it, then the branch is checked and reviewed again.
    Anything short of done puts the branch back as it was, for the resolver (the branch is the runner's)."""
    m, path = ctx.m, ctx.path
    before = git.rev_parse(path, "HEAD") or ""
    subject = f"Merge {conflict.base_branch} into {ctx.s.worktrees.branch_for(m.id)}"
    clash = git.merge_no_ff(path, ctx.base, subject, [])
    if clash:
        prompt = prompts.update(m, str(path), conflict.base_branch, clash, ctx.setting)
        outcome = _run_role(ctx, "update", prompt, resume_session=True)
        left = ctx.s.validator.still_conflicted(path, clash)
        if outcome.kind != "ok" or left:
            git.abort_and_reset(path, before)
            why = outcome.message if outcome.kind != "ok" else f"conflict markers left in {', '.join(left)}"
            status = "interrupted" if outcome.kind in ("interrupted", "budget") else "failed"
            return MilestoneResult(m.id, status, f"its own session did not resolve the conflict: {why[-300:]}")
        git.commit_merge(path, [before, ctx.base], [subject])
    head = git.rev_parse(path, "HEAD") or ""
    ctx.s.emit(Progress(m.id, {"commit": head}))
    _log_line(ctx, f"merged {conflict.base_branch} into the branch ({', '.join(clash) or 'no conflict left'})")
    result = _review_rounds(ctx, head, None)
    if result.status not in ("done", "interrupted"):
        git.abort_and_reset(path, before)
    return result


class _Pending(NamedTuple):
    """The agent's change, still to be committed once no secret is found in it."""

    message: str
    squash: bool


def _review_rounds(ctx: _Context, commit: str, pending: _Pending | None) -> MilestoneResult:
    """Checks, review, remediation: at most review.max_rounds rounds of checks and review."""
    m, rounds = ctx.m, ctx.s.config.review.max_rounds
    for round_no in range(1, rounds + 1):
        held = ctx.s.validator.secrets_in_worktree(ctx.path) if pending else None
        if held is not None:
            verdict = held  # nothing is committed: not even a staged blob may hold a secret
            _log_line(ctx, f"checks: {verdict.summary()}\n{verdict.report()}")
            ctx.s.emit(Progress(m.id, {"checks": verdict.summary()}))
        else:
            commit = _commit(ctx, pending.message, pending.squash) if pending else commit
            verdict = _check(ctx)
        findings: tuple[str, ...] = ()
        if verdict.ok and not ctx.s.config.review.enabled:
            return MilestoneResult(m.id, "done", "", commit)
        if verdict.ok:
            passed, findings = _review(ctx, round_no)
            if isinstance(passed, Outcome):  # stopped, or out of budget
                return _failure(ctx, passed)
            if passed:
                return MilestoneResult(m.id, "done", "", commit)
        if round_no == rounds:
            return _unfixed(m, verdict, findings, rounds)
        prompt = prompts.remediate(m, str(ctx.path), findings, _failures(verdict), ctx.setting)
        outcome = _run_role(ctx, "remediate", prompt, resume_session=True, round_no=round_no)
        if outcome.kind != "ok":
            return _failure(ctx, outcome)
        pending = _next_commit(m, round_no, verdict, pending if held is not None else None)
    return MilestoneResult(m.id, "failed", "unreachable")


def _next_commit(m: Milestone, round_no: int, verdict: Verdict, held_back: _Pending | None) -> _Pending:
    """What the remediation's commit will be; a change held back for a secret keeps its message."""
    if held_back is not None:
        return held_back
    return _Pending(f"Milestone {m.id}: remediation round {round_no}", squash=verdict.must_purge())


def _check(ctx: _Context) -> Verdict:
    """Exit criteria, tests, lint and quality gates; their output goes to the milestone's log."""
    ctx.s.emit(Progress(ctx.m.id, {"role": "check"}))
    verdict = _fresh_install(ctx) or ctx.s.validator.after_agent(ctx.m, ctx.path, ctx.base, ctx.task_env)
    ctx.s.emit(Progress(ctx.m.id, {"checks": verdict.summary()}))
    _log_line(ctx, f"checks: {verdict.summary()}\n{verdict.report()}")
    left = git.discard_changes(ctx.path)  # everything is committed: whatever is new, the checks made
    if left:
        _log_line(ctx, f"the checks left {', '.join(left[:20])} behind; discarded")
    return verdict


def _fresh_install(ctx: _Context) -> Verdict | None:
    """A changed lockfile (worktree.link_if_unchanged): the links give way to the setup's fresh install;
    a setup that then fails is a failing check the remediation sees."""
    failure = worktree_prep.refresh_links(prep_for(ctx), ctx.path)
    if failure is None:
        return None
    return Verdict(False, (CheckResult("worktree.setup after the lockfile changed", False, failure),))


def _failures(verdict: Verdict) -> str:
    return verdict.failure_output() if not verdict.ok else ""


def _unfixed(m: Milestone, verdict: Verdict, findings: Sequence[str], rounds: int) -> MilestoneResult:
    if not verdict.ok:
        return MilestoneResult(
            m.id,
            "failed",
            f"exit criteria not met after {rounds} round(s): {verdict.summary()}\n" + verdict.failure_output()[-2000:],
        )
    return MilestoneResult(m.id, "failed", f"review failed after {rounds} round(s): " + "; ".join(findings)[:1500])


def _commit(ctx: _Context, message: str, squash: bool = False) -> str:
    if squash:
        # A rejected secret or oversized file must not stay in the branch's history:
        # the branch is the runner's own and unpublished, so rewrite it as one commit.
        git.reset_soft(ctx.path, ctx.base)
        message = f"Milestone {ctx.m.id}: {ctx.m.title}"
        _log_line(ctx, "rewrote the branch as one commit: the rejected content is not kept in its history")
    git.commit_all(ctx.path, message)
    sha = git.rev_parse(ctx.path, "HEAD") or ""
    ctx.s.emit(Progress(ctx.m.id, {"commit": sha}))
    return sha


def _failure(ctx: _Context, outcome: Outcome) -> MilestoneResult:
    if outcome.kind == "interrupted":
        return MilestoneResult(ctx.m.id, "interrupted", outcome.message)
    if outcome.kind == "budget":  # the run's or stage's cap: --resume goes on from here once it is raised
        return MilestoneResult(ctx.m.id, "interrupted", outcome.message)
    fatal = outcome.kind == "auth"
    plain = outcome.kind in ("failed", "over_budget")
    reason = outcome.message if plain else f"{outcome.kind}: {outcome.message}"
    return MilestoneResult(ctx.m.id, "failed", reason, fatal=fatal)


def _review(ctx: _Context, round_no: int) -> tuple[bool | Outcome, tuple[str, ...]]:
    """(passed, findings); instead of passed, why it stopped (a stop, a budget). Whatever the
    reviewer changes is thrown away."""
    review_file = ctx.s.prompt_dir / f"{ctx.m.id}-review-{round_no}.json"
    prompt = prompts.review(ctx.m, str(ctx.path), git.diff(ctx.path, ctx.base), str(review_file))
    head = git.rev_parse(ctx.path, "HEAD") or ""
    verdict: review.Review | None = None
    discarded: list[str] = []
    for _ in range(2):  # no verdict: one retry, then it counts as a failure
        env = {"ORCHESTRATOR_REVIEW_FILE": str(review_file)}
        outcome = _run_role(ctx, "review", prompt, resume_session=False, extra_env=env, round_no=round_no)
        files.make_private(review_file)  # the reviewer wrote it with its own umask
        discarded += _discard_reviewer_changes(ctx, head)
        if outcome.kind == "interrupted":
            return Outcome("interrupted", "stopped during review", False), ()
        if outcome.kind in ("budget", "over_budget"):
            return outcome, ()
        verdict = review.read_verdict(review_file, outcome.message) if outcome.kind == "ok" else None
        if verdict is not None:
            break
        _log_line(ctx, f"the review gave no verdict ({outcome.kind}: {outcome.message[-300:]})")
    verdict = _counted(verdict)
    review.write_log(review.log_path(ctx.s.log_dir, ctx.m.id, round_no), ctx.m.id, round_no, verdict, discarded)
    ctx.s.emit(Progress(ctx.m.id, {"review_rounds": round_no, "last_findings": verdict.findings}))
    return verdict.passed, verdict.findings


def _counted(verdict: review.Review | None) -> review.Review:
    if verdict is None:
        return review.Review(False, (review.NO_VERDICT,), "")
    if not verdict.passed and not verdict.findings:
        return verdict._replace(findings=("the reviewer failed the change without saying why",))
    return verdict


def _discard_reviewer_changes(ctx: _Context, head: str) -> list[str]:
    """Put the worktree back to `head`, also when the reviewer committed; say what was dropped."""
    dropped = []
    if git.rev_parse(ctx.path, "HEAD") != head:
        dropped = git.changed_between(ctx.path, head, "HEAD")
        git.reset_hard(ctx.path, head)
    dropped = sorted({*dropped, *git.discard_changes(ctx.path)})
    if dropped:
        _log_line(ctx, f"the reviewer changed {', '.join(dropped)}; those changes were discarded")
    return dropped


def _log_line(ctx: _Context, text: str) -> None:
    with files.open_private(ctx.s.log_dir / f"{ctx.m.id}.log") as log:
        log.write(redact.active().mask(f"[orchestrator] {text}\n"))


def _run_role(
    ctx: _Context,
    role: str,
    prompt: str,
    resume_session: bool,
    extra_env: Mapping[str, str] | None = None,
    round_no: int = 1,
) -> Outcome:
    """Run an agent role with backoff for transient errors; usage-limit waits are not attempts."""
    s = ctx.s
    # task: the whole prompt, for a fresh session; prompt: what the next run gets (after a
    # setback, a resumed session is only told to go on); resume: continue tally.session_id;
    # round: the review round, which names the launch a resumed runner adopts (orchestrator_lib.launches).
    state = {"task": prompt, "prompt": prompt, "resume": resume_session, "resumed": False, "round": round_no}

    def attempt() -> Outcome:
        return _attempt(ctx, role, state, extra_env or {})

    retrying = s.rate_limits.retrying(s.config.retry_attempts + 1, s.stop_for(ctx.m.id))
    outcome: Outcome = retrying(attempt)
    return outcome


def _attempt(ctx: _Context, role: str, state: dict[str, Any], extra_env: Mapping[str, str]) -> Outcome:
    s, m = ctx.s, ctx.m
    agent = milestone_agent.for_role(s.config, m, role)
    while True:
        stop = s.stop_for(m.id)
        if stop.is_set():
            return Outcome("interrupted", "stopped by user", False)
        s.emit(Progress(m.id, {"role": role}))  # while the gates below wait, views show what waits
        if not s.rate_limits.wait_if_paused(stop):
            return Outcome("interrupted", "stopped while waiting for the usage limit", False)
        held = s.monitor.wait_until_ok(stop, lambda reason: s.emit(Held(reason or "")))
        if held:
            return Outcome("interrupted" if held == "stopped" else "resources", held, False)
        refused = _budget_gate(ctx, agent, role, starting=True)
        if refused:
            return refused
        run, kind = _one_run(
            ctx, budget.with_remaining(agent, s.config.budget, ctx.tally.cost_usd, role), role, state, extra_env
        )
        over = _budget_gate(ctx, agent, role, starting=False)  # whatever the run achieved: over its budget, it stops
        if over:
            return over
        if kind.kind == "ok":
            ctx.tally.crashes = 0
            return Outcome("ok", run.output, False)
        if state["resumed"] and any(text in run.output for text in _SESSION_MISSING):
            # Killed before the CLI saved the session: nothing to continue, and no attempt lost.
            _log_line(ctx, f"session {ctx.tally.session_id} was never saved; starting a fresh one")
            ctx.tally.session_id = ""
            state.update(prompt=state["task"], resume=False)
            continue
        if kind.kind == "usage_limit":
            _pause(ctx, kind)
            _go_on(ctx, agent, role, state, prompts.continue_after_limit())
            continue
        outcome = _setback(ctx, state, run, kind)
        if outcome.kind in ("context", "stalled") and outcome.retryable:  # bounded by recovery.max_attempts alone
            what = "context exhausted" if outcome.kind == "context" else "stalled"
            _log_line(ctx, f"{what} ({outcome.message}); a fresh session goes on from the files")
            continue
        _log_line(ctx, f"{outcome.kind}: {outcome.message}" + ("; retrying" if outcome.retryable else ""))
        if outcome.retryable:
            _go_on(ctx, agent, role, state, prompts.continue_after_error(outcome.message))
        return outcome


def _budget_gate(ctx: _Context, agent: AgentConfig, role: str, starting: bool) -> Outcome | None:
    """The milestone's own cap reached: it fails; before a start, the run's or stage's cap reached:
    it is held back (running agents finish). The resolver and draft are not a milestone's agents."""
    if role not in budget.MILESTONE_ROLES:
        return None
    over = budget.over_milestone(ctx.tally.cost_usd, budget.milestone_cap(ctx.s.config.budget, agent.budget_usd))
    held = ctx.s.budget.refusal(ctx.m.stage) if starting and ctx.s.budget is not None and not over else None
    if over or held:
        _log_line(ctx, f"{role}: {over or held}; no agent starts")
    return Outcome("over_budget", over, False) if over else Outcome("budget", held, False) if held else None


# Claude: "No conversation found with session ID …"; Codex: "no rollout found for thread id …".
_SESSION_MISSING = ("No conversation found with session ID", "no rollout found for thread id")


def _pause(ctx: _Context, kind: limits.Classification) -> None:
    until = ctx.s.rate_limits.pause(kind.reset_at, kind.message, exact=kind.reset_exact)
    ctx.s.emit(Paused(until, kind.message))
    _log_line(ctx, f"usage limit: {kind.message}; every task waits until {time.ctime(until)}")


def _go_on(ctx: _Context, agent: AgentConfig, role: str, state: dict[str, Any], note: str) -> None:
    """The next run continues the agent's own session with `note`, or starts over with the task."""
    resumable = presets.get(agent.preset).resumes_session and role != "review" and bool(ctx.tally.session_id)
    state.update(prompt=note if resumable else state["task"], resume=resumable)


def _setback(ctx: _Context, state: dict[str, Any], run: agents.AgentRun, kind: limits.Classification) -> Outcome:
    tally = ctx.tally
    if run.killed == "stopped":
        return Outcome("interrupted", "stopped by user", False)
    if kind.kind == "context" or run.killed in ("context", "idle"):
        return _recover(ctx, state, run, kind)
    if run.killed:
        tally.watchdog_kills += 1  # a killed run counts as transient once, then fails
        return Outcome("transient", kind.message, tally.watchdog_kills <= 1 and _crashed(ctx))
    return Outcome(kind.kind, kind.message, kind.kind in ("transient", "failed") and _crashed(ctx))


def _crashed(ctx: _Context) -> bool:
    """Count a failed run; it is retried while the count (kept across resumes) is within retry_attempts."""
    ctx.tally.crashes += 1
    ctx.s.emit(Progress(ctx.m.id, {"crashes": ctx.tally.crashes}))
    return ctx.tally.crashes <= ctx.s.config.retry_attempts


def _recover(ctx: _Context, state: dict[str, Any], run: agents.AgentRun, kind: limits.Classification) -> Outcome:
    """A stalled or exhausted session: a fresh one, told what its worktree holds (recovery.max_attempts)."""
    tally = ctx.tally
    tally.recoveries += 1
    tally.session_id = ""
    agent = milestone_agent.for_role(ctx.s.config, ctx.m, "implement")
    if run.killed == "idle":
        minutes = agent.idle_timeout_minutes
        what, message = "stalled", f"no output for {minutes:g} min (agent.idle_timeout_minutes)"
    else:
        found = limits.classify(agent.preset, 0, run.output, _now(ctx.s.clock))
        what, message = "context", found.message if found.kind == "context" else kind.message
    committed = git.changed_between(ctx.path, ctx.base, "HEAD") + git.status_paths(ctx.path)
    note = prompts.resume_note("context exhausted" if what == "context" else message, committed)
    task = prompts.implement(ctx.m, str(ctx.path), note, ctx.setting)
    state.update(task=task, prompt=task, resume=False)
    ctx.s.emit(Progress(ctx.m.id, {"recoveries": tally.recoveries, "session_id": ""}))
    return Outcome(what, message, tally.recoveries <= ctx.s.config.recovery.max_attempts)


def _one_run(
    ctx: _Context, agent: AgentConfig, role: str, state: dict[str, Any], extra_env: Mapping[str, str]
) -> tuple[agents.AgentRun, limits.Classification]:
    s, m, tally = ctx.s, ctx.m, ctx.tally
    path = launches.launch_file(agent_dir(s), m.id, role, state["round"])
    watch = agents.Watch(s.stop_for(m.id), _on_start(ctx), _line_reporter(ctx), _exhausted(agent.preset, s.clock))
    timeout_s, idle_s = agent.timeout_minutes * 60, agent.idle_timeout_minutes * 60
    head: str | None = None
    earlier = _adoptable(ctx, path, role)
    if earlier is not None:
        launch, status = earlier
        named = launch.session_id
        _take_session(ctx, role, state, launch)
        s.emit(Progress(m.id, {"role": role, **tally.fields()}))
        run = agents.rejoin(path, launch, status, watch=watch, timeout_s=timeout_s, idle_s=idle_s)
        _log_line(ctx, f"{role}: took over the agent the previous run started (pid {status.agent_pid})")
    else:
        inv = _invocation(ctx, agent, role, state, extra_env)
        named = inv.session_id or ""
        head = git.rev_parse(ctx.path, "HEAD") if _judged_by_git(agent, role) else None
        launching = agents.Launching(path, m.id, role, state["round"], s.root / ".env")
        run = agents.run_agent(
            inv,
            cwd=ctx.path,
            log_path=s.log_dir / f"{m.id}.log",
            header=f"{m.id} {role} attempt {tally.attempts}",
            timeout_s=timeout_s,
            idle_s=idle_s,
            watch=watch,
            launching=launching,
        )
    kind = s.rate_limits.classify(agent.preset, run)
    if kind.kind == "ok" and head is not None and _unchanged(ctx, head):
        kind = limits.Classification("transient", None, f"{agent.preset} exited 0 without changing anything")
    if kind.kind != "ok":
        _used(path)
    report = limits.read_report(run.output)
    tally.add(report)
    if refused := denials.read(run.output):
        tally.refused = tuple(dict.fromkeys((*tally.refused, *refused)))
        _log_line(ctx, f"{role}: {denials.summary(refused)}")
    if presets.get(agent.preset).resumes_session and role != "review" and report.session_id and not named:
        tally.session_id = report.session_id  # Codex names its session only once it runs
        state["resume"] = True
    s.emit(Progress(m.id, {"agent_pid": 0, "agent_started": 0.0, **tally.fields()}))
    return run, kind


def _used(path: Path) -> None:
    """A success is taken over again after a crash (committing it twice changes nothing); a
    setback, once acted on (a pause, a failure counted), must not be acted on twice."""
    launch = launches.read_launch(path)
    if launch is not None:
        launches.mark_used(path, launch.id)


def agent_dir(s: Services) -> Path:
    """Where launches are recorded: .orchestrator/agents, next to the prompts."""
    return s.prompt_dir.parent / launches.AGENTS_DIR


def _adoptable(ctx: _Context, path: Path, role: str) -> tuple[launches.Launch, launches.Status] | None:
    """A launch of this milestone, role and round that a dead runner made and nobody has used here yet.

    Still running: adopt it; finished: use its result. Gone without an exit status (a reboot, its
    whole group killed) or older than the milestone's last finished run: None, a new attempt.
    """
    launch = launches.read_launch(path)
    if role in launches.NOT_ADOPTED or launch is None or launch.id in ctx.tally.used or launch.milestone != ctx.m.id:
        return None
    ctx.tally.used.add(launch.id)  # taken over once: a retry after it is a new start
    if launch.runner == launches.THIS_RUNNER or launch.launched_at <= ctx.tally.fresh_since:
        return None
    if launches.was_used(path, launch):
        return None
    status = launches.settle(path, launch)
    if status is None or status.error or not (status.finished or launches.is_running(status)):
        return None
    if status.finished and status.signal:  # killed (a stop, a reboot): it did not finish its work
        return None
    return launch, status


def _take_session(ctx: _Context, role: str, state: dict[str, Any], launch: launches.Launch) -> None:
    if launch.session_id and role != "review":
        ctx.tally.session_id = launch.session_id
        state["resume"] = True


def _invocation(
    ctx: _Context, agent: AgentConfig, role: str, state: dict[str, Any], extra_env: Mapping[str, str]
) -> agents.Invocation:
    s, m, tally = ctx.s, ctx.m, ctx.tally
    if role in ("implement", "remediate"):
        tally.attempts += 1
    if role == "review":
        Path(extra_env["ORCHESTRATOR_REVIEW_FILE"]).unlink(missing_ok=True)  # a verdict is this run's own
    prompt_file = s.prompt_dir / f"{m.id}-{role}.md"
    with files.open_private(prompt_file, "w") as f:
        f.write(redact.active().mask(state["prompt"]))
    resume = tally.session_id if state["resume"] and role != "review" and tally.session_id else None
    state["resumed"] = resume is not None
    inv = agents.build_invocation(
        agent,
        role=role,
        milestone_id=m.id,
        worktree=ctx.path,
        prompt=state["prompt"],
        prompt_file=prompt_file,
        base_env=s.agent_env,
        extra_env={**ctx.task_env, **extra_env},
        resume_session=resume,
        root=s.root,
    )
    if inv.session_id and role != "review":
        tally.session_id = inv.session_id
        state["resume"] = True  # from now on this session exists: later runs continue it
    s.emit(Progress(m.id, {"role": role, **tally.fields()}))
    return inv


def _judged_by_git(agent: AgentConfig, role: str) -> bool:
    # e.g. Aider exits 0 when it gives up on rate limits (captures/aider_429): when its output
    # does not say so, a run that changed nothing in git did not succeed either.
    return presets.get(agent.preset).judged_by_git and role in ("implement", "remediate")


def _unchanged(ctx: _Context, head: str) -> bool:
    return git.rev_parse(ctx.path, "HEAD") == head and not git.status_paths(ctx.path)


def _exhausted(preset: str, clock: Callable[[], float]) -> Callable[[str], str | None]:
    """Stops an agent the moment it says its context is used up: it would only flounder on."""

    def check(line: str) -> str | None:
        found = limits.classify(preset, 0, line, _now(clock))
        return found.message if found.kind == "context" else None

    return check


def _on_start(ctx: _Context) -> Callable[[int, float], None]:
    def started(pid: int, create_time: float) -> None:
        ctx.s.emit(Progress(ctx.m.id, {"agent_pid": pid, "agent_started": create_time}))

    return started


def _line_reporter(ctx: _Context) -> Callable[[str], None]:
    last = _LastLine(lambda text: ctx.s.emit(Progress(ctx.m.id, {"last_line": text})))

    def heard(line: str) -> None:
        _hold_if_warned(ctx, line)
        last(line)

    return heard


def _hold_if_warned(ctx: _Context, line: str) -> None:
    held = budget.hold(ctx.s.rate_limits, ctx.s.config.rate_limit, line, ctx.s.clock())
    if held is not None:
        ctx.s.emit(Paused(held.until, held.reason))
        _log_line(ctx, f"{held.reason}; no new agent starts until {time.ctime(held.until)}")


class _LastLine:
    """The agent's latest readable line, at most one state write a second per agent.

    A line that arrives sooner is sent when the second is up, so the last line of a burst
    is what the dashboard shows, not its first one.
    """

    GAP = 1.0

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._sent_at = -self.GAP
        self._pending: str | None = None
        self._timer: threading.Timer | None = None

    def __call__(self, line: str) -> None:
        readable = transcript.readable(line)
        if not readable:
            return
        with self._lock:
            self._pending = readable[:200]
            if self._timer is not None:
                return  # already due: it will send this newer line
            wait = self._sent_at + self.GAP - time.monotonic()
            if wait <= 0:
                self._flush_locked()
                return
            self._timer = threading.Timer(wait, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending is not None:
            self._send(self._pending)
            self._pending, self._sent_at = None, time.monotonic()


class AgentSession:
    """An agent conversation outside a milestone's pipeline (the `draft` command's planner), with
    the same retries, usage-limit pauses, watchdogs, recoveries and log as a milestone's agent."""

    def __init__(self, s: Services, m: Milestone, path: Path) -> None:
        self._ctx = _Context(s, m, path, "", _Tally())

    def run(self, role: str, prompt: str, resume: bool) -> Outcome:
        """One turn; `resume` continues this session (Claude: --resume) when the agent has one."""
        return _run_role(self._ctx, role, prompt, resume_session=resume)

    @property
    def resumable(self) -> bool:
        """True when the next turn continues the same conversation, so it needs only the news."""
        return bool(self._ctx.tally.session_id)


def run_resolver(
    s: Services, stand_in: Milestone, path: Path, prompt: str, isolation: worktree_prep.Isolation | None = None
) -> bool:
    """The resolve role in an integration worktree (integration.py): True when its fix may be committed."""
    ctx = _Context(s, stand_in, path, git.rev_parse(path, "HEAD") or "", _Tally(), isolation)
    outcome = _run_role(ctx, "resolve", prompt, resume_session=False)
    held = s.validator.secrets_in_worktree(path) if outcome.kind == "ok" else None
    if held is not None:  # its fix would be committed next: a secret must not become an object
        _log_line(ctx, f"the resolver's fix is not used: {held.failure_output()}")
    return outcome.kind == "ok" and held is None


def _now(clock: Callable[[], float]) -> datetime:
    """The injected clock as an aware local time, for reading reset times in an agent's output."""
    return datetime.fromtimestamp(clock()).astimezone()

"""Spending caps and the hold before a usage limit: may another agent start?

Spend is what the agents report (Claude's `total_cost_usd`; a preset that reports no cost
counts 0). Each milestone's spend is kept in its state record (`cost_usd`, carried across
retries and resumes), so a resumed run counts what was spent before. The ledger holds every
milestone's spend for this runner (recorded as the workers report it, Runner._emit); a worker asks
it before each agent start.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from orchestrator_lib import limits
from orchestrator_lib.config import AgentConfig, BudgetConfig, RateLimitConfig
from orchestrator_lib.limits import UsageWarning
from orchestrator_lib.state import MilestoneState


class Pauses(Protocol):
    """What the hold needs of advanced.RateLimitManager (it holds every task's starts)."""

    @property
    def paused_until(self) -> float: ...

    def pause_until(self, until: float, reason: str) -> float: ...


REACHED = "budget reached"
# The agents whose spend is the milestone's ("update": its own session merging a moved base).
MILESTONE_ROLES = ("implement", "remediate", "review", "update")
HOLDING = "holding new starts"

# rateLimitType as a person says it; an unknown one is shown as Claude names it.
_WINDOWS = {
    "five_hour": "5-hour window",
    "seven_day": "weekly window",
    "seven_day_opus": "weekly Opus window",
    "seven_day_sonnet": "weekly Sonnet window",
}


class Spent(NamedTuple):
    milestone_id: str
    stage: int
    cost_usd: float


def spent_of(records: Iterable[MilestoneState]) -> list[Spent]:
    """What the state says each milestone has spent (kept across runs: a resumed run counts it)."""
    return [Spent(r.id, r.stage, r.cost_usd) for r in records]


def pause_line(reason: str, until: str) -> str:
    """What the terminal says of a pause in force: a usage limit, or the hold before one."""
    if reason.startswith(HOLDING):
        return f"{reason} · running agents go on; new ones wait until {until}"
    return f"usage limit: {reason} · every task waits until {until}"


def usd(amount: float) -> str:
    return f"${amount:.2f}"


def over_milestone(spent: float, cap: float | None) -> str | None:
    """The failure reason of a milestone whose spend reached its cap, else None."""
    if cap is None or spent < cap:
        return None
    return f"{REACHED} ({usd(spent)} of {usd(cap)})"


def milestone_cap(caps: BudgetConfig, agent_budget: float | None) -> float | None:
    """The lower of budget.milestone_usd and the milestone's own agent budget_usd."""
    set_caps = [c for c in (caps.milestone_usd, agent_budget) if c is not None]
    return min(set_caps) if set_caps else None


def with_remaining(agent: AgentConfig, caps: BudgetConfig, spent: float, role: str) -> AgentConfig:
    """A milestone's agent with what is left of its cap as budget_usd: Claude's --max-budget-usd then
    stops it mid-run (the runner sees a cost only when a run ends)."""
    cap = milestone_cap(caps, agent.budget_usd)
    if cap is None or role not in MILESTONE_ROLES:
        return agent
    return dataclasses.replace(agent, budget_usd=round(max(cap - spent, 0.01), 6))


class Ledger:
    """Every milestone's spend, shared by the workers; the run's and each stage's caps."""

    def __init__(self, caps: BudgetConfig, spent: Iterable[Spent] = ()) -> None:
        self.caps = caps
        self._lock = threading.Lock()
        self._spent: dict[str, Spent] = {s.milestone_id: s for s in spent}
        self._refused = ""

    def record(self, milestone_id: str, stage: int, cost_usd: float) -> None:
        """A milestone's whole spend so far (not an increment: recording twice changes nothing)."""
        with self._lock:
            self._spent[milestone_id] = Spent(milestone_id, stage, cost_usd)

    def run_total(self) -> float:
        with self._lock:
            return sum(s.cost_usd for s in self._spent.values())

    def stage_total(self, stage: int) -> float:
        with self._lock:
            return sum(s.cost_usd for s in self._spent.values() if s.stage == stage)

    def refusal(self, stage: int) -> str | None:
        """Why no new agent may start in `stage` (the run's or the stage's cap reached), else None."""
        run, caps = self.run_total(), self.caps
        if caps.run_usd is not None and run >= caps.run_usd:
            why = f"{REACHED}: the run spent {usd(run)} of {usd(caps.run_usd)} (budget.run_usd)"
        elif caps.stage_usd is not None and (spent := self.stage_total(stage)) >= caps.stage_usd:
            why = f"{REACHED}: stage {stage} spent {usd(spent)} of {usd(caps.stage_usd)} (budget.stage_usd)"
        else:
            return None
        with self._lock:
            self._refused = self._refused or why
        return why

    @property
    def refused(self) -> str:
        """The first refusal of this runner ("" if none): the run ends with it once running agents finish."""
        with self._lock:
            return self._refused


def hold_reason(warning: UsageWarning, now: float) -> str:
    """ "holding new starts: 5-hour window at 96 % · resets 14:00" (local time; a later day is named)."""
    window = _WINDOWS.get(warning.window, warning.window or "usage window")
    text = f"{HOLDING}: {window} at {warning.utilization * 100:.0f} %"
    if warning.resets_at is not None:
        at = time.localtime(warning.resets_at)
        same_day = at[:3] == time.localtime(now)[:3]
        text += f" · resets {time.strftime('%H:%M' if same_day else '%a %H:%M', at)}"
    return text


def holds(warning: UsageWarning, threshold: float | None, now: float) -> bool:
    """A warning at or past rate_limit.pause_at_utilization with a reset still ahead holds new starts."""
    if threshold is None or warning.resets_at is None or warning.resets_at <= now:
        return False
    return warning.utilization >= threshold


class Hold(NamedTuple):
    until: float
    reason: str


def hold(rate_limits: Pauses, config: RateLimitConfig, line: str, now: float) -> Hold | None:
    """Claude's usage warning in `line` at or past rate_limit.pause_at_utilization: no new agent
    starts until its window resets plus the grace (running agents go on), like a usage-limit pause.
    The hold when it is new or later than the one in force, else None."""
    warning = limits.usage_warning(line)
    if warning is None or warning.resets_at is None or not holds(warning, config.pause_at_utilization, now):
        return None
    reason = hold_reason(warning, now)
    before = rate_limits.paused_until
    until = rate_limits.pause_until(warning.resets_at + config.grace_seconds, reason)
    return Hold(until, reason) if until > before else None

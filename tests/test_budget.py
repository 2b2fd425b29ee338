"""Budget accounting, the usage-warning hold and their views, without agents (the real CLI: test_budget_claude)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

from advanced import RateLimitManager
from orchestrator_lib import budget, limits, render
from orchestrator_lib.config import AgentConfig, BudgetConfig, Config, ConfigError, RateLimitConfig, load_config
from orchestrator_lib.notify import Announcer
from orchestrator_lib.plan import Plan
from orchestrator_lib.state import MilestoneState, RunState

NOW = 1_800_000_000.0


def warning_line(status: str = "allowed_warning", utilization: Any = 0.96, resets_at: Any = NOW + 3600) -> str:
    info = {"status": status, "resetsAt": resets_at, "rateLimitType": "five_hour", "utilization": utilization}
    return json.dumps({"type": "rate_limit_event", "rate_limit_info": info, "session_id": "s"})


# --- accounting -----------------------------------------------------------------------


def test_the_ledger_sums_the_run_and_each_stage_and_recording_again_replaces() -> None:
    ledger = budget.Ledger(BudgetConfig(), [budget.Spent("1A", 1, 1.25)])
    ledger.record("1B", 1, 0.5)
    ledger.record("2A", 2, 2.0)
    ledger.record("1B", 1, 0.75)  # a milestone's whole spend so far, not an increment

    assert ledger.run_total() == pytest.approx(4.0)
    assert ledger.stage_total(1) == pytest.approx(2.0)
    assert ledger.stage_total(2) == pytest.approx(2.0)


def test_no_caps_refuse_nothing() -> None:
    ledger = budget.Ledger(BudgetConfig(), [budget.Spent("1A", 1, 1e6)])
    assert ledger.refusal(1) is None and ledger.refused == ""


def test_the_run_cap_refuses_once_reached_and_remembers_the_first_refusal() -> None:
    ledger = budget.Ledger(BudgetConfig(run_usd=2.0), [budget.Spent("1A", 1, 1.99)])
    assert ledger.refusal(1) is None
    ledger.record("1B", 1, 0.01)

    reason = ledger.refusal(2)

    assert reason == "budget reached: the run spent $2.00 of $2.00 (budget.run_usd)"
    ledger.record("1C", 1, 5.0)
    assert ledger.refused == reason  # the first one is what the run ends with


def test_the_stage_cap_counts_only_that_stage() -> None:
    ledger = budget.Ledger(BudgetConfig(stage_usd=1.0), [budget.Spent("1A", 1, 1.5), budget.Spent("2A", 2, 0.2)])
    assert ledger.refusal(2) is None
    assert ledger.refusal(1) == "budget reached: stage 1 spent $1.50 of $1.00 (budget.stage_usd)"


def test_earlier_spend_in_the_state_counts_for_a_resumed_run() -> None:
    records = [MilestoneState("1A", 1, "A", cost_usd=3.0), MilestoneState("1B", 1, "B")]
    ledger = budget.Ledger(BudgetConfig(run_usd=3.0), budget.spent_of(records))
    assert ledger.refusal(1) is not None


@pytest.mark.parametrize(
    ("spent", "cap", "reason"),
    [
        (0.99, 1.0, None),
        (1.0, 1.0, "budget reached ($1.00 of $1.00)"),
        (3.000123, 1.0, "budget reached ($3.00 of $1.00)"),
        (1e9, None, None),
    ],
)
def test_a_milestone_fails_once_its_spend_reaches_its_cap(spent: float, cap: float | None, reason: str | None) -> None:
    assert budget.over_milestone(spent, cap) == reason


def test_the_milestone_cap_is_the_lower_of_the_config_and_the_agent_budget() -> None:
    assert budget.milestone_cap(BudgetConfig(), None) is None
    assert budget.milestone_cap(BudgetConfig(milestone_usd=2.0), None) == 2.0
    assert budget.milestone_cap(BudgetConfig(), 1.5) == 1.5
    assert budget.milestone_cap(BudgetConfig(milestone_usd=2.0), 1.5) == 1.5
    assert budget.milestone_cap(BudgetConfig(milestone_usd=1.0), 1.5) == 1.0


def test_claude_is_given_what_is_left_of_the_milestones_budget() -> None:
    agent = AgentConfig(budget_usd=2.0)
    assert budget.with_remaining(agent, BudgetConfig(), 0.5, "implement").budget_usd == 1.5
    assert budget.with_remaining(agent, BudgetConfig(milestone_usd=1.0), 0.25, "review").budget_usd == 0.75
    assert budget.with_remaining(AgentConfig(), BudgetConfig(milestone_usd=1.0), 0.0, "remediate").budget_usd == 1.0
    assert budget.with_remaining(AgentConfig(), BudgetConfig(), 0.5, "implement") == AgentConfig()
    assert budget.with_remaining(agent, BudgetConfig(), 0.5, "resolve") == agent  # not a milestone's agent
    assert budget.with_remaining(agent, BudgetConfig(), 1.999999, "implement").budget_usd == 0.01


def test_records_from_many_threads_are_all_counted() -> None:
    ledger = budget.Ledger(BudgetConfig())

    def spend(n: int) -> None:
        for i in range(200):
            ledger.record(f"{n}-{i}", n % 3, 0.01)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert ledger.run_total() == pytest.approx(16.0)


# --- reading Claude's usage warning ------------------------------------------------------


def test_a_usage_warning_is_read_from_its_stream_json_line() -> None:
    found = limits.usage_warning(warning_line())
    assert found == limits.UsageWarning(0.96, "five_hour", NOW + 3600)


@pytest.mark.parametrize(
    "line",
    [
        warning_line(status="allowed"),
        warning_line(status="rejected"),
        warning_line(utilization=None),
        warning_line(utilization="0.96"),
        '{"type": "assistant", "message": {"content": "rate_limit_event allowed_warning"}}',
        "rate_limit_event allowed_warning utilization 0.99",
        '{"type":"rate_limit_event","rate_limit_info":"x"}',
    ],
)
def test_anything_else_is_no_warning(line: str) -> None:
    assert limits.usage_warning(line) is None


def test_resets_at_in_milliseconds_is_read_as_seconds() -> None:
    found = limits.usage_warning(warning_line(resets_at=(NOW + 60) * 1000))
    assert found is not None and found.resets_at == NOW + 60


def test_aiders_usage_lines_are_its_report() -> None:
    output = "\n".join(
        [
            "Aider v0.86.2",
            "Tokens: 1.0k sent, 15 received. Cost: $1.04 message, $1.04 session.",
            "Applied edit to a.txt",
            "Tokens: 2.5k sent, 1.2k cache write, 3k cache hit, 1.5M received. Cost: $0.0040 message, $1.0440 session.",
        ]
    )
    report = limits.read_report(output)
    assert report.cost_usd == pytest.approx(1.044)
    assert report.input_tokens == 3500 and report.output_tokens == 1_500_015


def test_aider_without_a_price_reports_tokens_only() -> None:
    report = limits.read_report("Tokens: 980 sent, 12 received.\n")
    assert report.cost_usd is None and report.input_tokens == 980 and report.output_tokens == 12
    assert limits.read_report("model text: Tokens: 5 sent, 1 received.") == limits.read_report("")


# --- the hold --------------------------------------------------------------------------


def manager(grace: float = 2.0, share: float | None = 0.95) -> tuple[RateLimitManager, RateLimitConfig]:
    rl = RateLimitConfig(grace_seconds=grace, pause_at_utilization=share)
    return RateLimitManager(Config(rate_limit=rl), clock=lambda: NOW), rl


def test_a_warning_at_the_threshold_holds_until_the_reset_plus_the_grace() -> None:
    rates, rl = manager()

    held = budget.hold(rates, rl, warning_line(utilization=0.95), NOW)

    assert held is not None and held.until == NOW + 3600 + 2.0
    assert held.reason.startswith("holding new starts: 5-hour window at 95 % · resets ")
    assert rates.paused_until == held.until and rates.reason == held.reason


@pytest.mark.parametrize(
    ("line", "share"),
    [
        (warning_line(utilization=0.94), 0.95),  # below the threshold
        (warning_line(status="allowed"), 0.95),  # a plain allowed
        (warning_line(utilization=1.0), None),  # null turns the hold off
        (warning_line(resets_at=NOW - 1), 0.95),  # the window has already reset
        (warning_line(resets_at=None), 0.95),  # no reset to wait for
    ],
)
def test_what_does_not_hold(line: str, share: float | None) -> None:
    rates, rl = manager(share=share)
    assert budget.hold(rates, rl, line, NOW) is None
    assert rates.paused_until == 0.0


def test_the_same_warning_again_is_not_a_new_hold_and_a_later_reset_extends_it() -> None:
    rates, rl = manager()
    assert budget.hold(rates, rl, warning_line(), NOW) is not None
    assert budget.hold(rates, rl, warning_line(utilization=0.97), NOW) is None  # same reset: nothing new
    later = budget.hold(rates, rl, warning_line(resets_at=NOW + 7200), NOW)
    assert later is not None and rates.paused_until == NOW + 7202


def test_a_hold_blocks_new_starts_until_it_ends() -> None:
    now = [NOW]
    naps: list[float] = []

    def sleep(seconds: float) -> bool:
        naps.append(seconds)
        now[0] += seconds
        return False

    rl = RateLimitConfig(grace_seconds=2.0)
    rates = RateLimitManager(Config(rate_limit=rl), clock=lambda: now[0], sleep=sleep)
    budget.hold(rates, rl, warning_line(resets_at=NOW + 10), now[0])

    assert rates.wait_if_paused(threading.Event())
    assert now[0] >= NOW + 12 and sum(naps) >= 12


@pytest.mark.parametrize(
    ("window", "said"),
    [("five_hour", "5-hour window"), ("seven_day", "weekly window"), ("seven_day_opus", "weekly Opus window")],
)
def test_the_hold_names_the_window(window: str, said: str) -> None:
    reason = budget.hold_reason(limits.UsageWarning(0.962, window, NOW), NOW - 60)
    assert reason == f"holding new starts: {said} at 96 % · resets {time.strftime('%H:%M', time.localtime(NOW))}"


def test_a_reset_on_another_day_names_the_day() -> None:
    later = NOW + 3 * 86400
    reason = budget.hold_reason(limits.UsageWarning(0.8, "seven_day", later), NOW)
    assert reason.endswith(f"resets {time.strftime('%a %H:%M', time.localtime(later))}")


# --- config ----------------------------------------------------------------------------


def config_problems(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "orchestrator.config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    return str(caught.value)


@pytest.mark.parametrize("value", [0, -1, "5", True])
def test_a_cap_must_be_a_positive_number(tmp_path: Path, value: Any) -> None:
    assert "`budget.run_usd` must be" in config_problems(tmp_path, {"budget": {"run_usd": value}})


def test_an_unknown_budget_key_names_the_valid_ones(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, {"budget": {"limit": 5}})
    assert "unknown config key `budget.limit`" in problems and "run_usd, stage_usd, milestone_usd" in problems


@pytest.mark.parametrize("value", [0, -0.1, 1.01, "0.9"])
def test_pause_at_utilization_is_more_than_0_and_at_most_1(tmp_path: Path, value: Any) -> None:
    problems = config_problems(tmp_path, {"rate_limit": {"pause_at_utilization": value}})
    assert "`rate_limit.pause_at_utilization` must be" in problems


def test_defaults_and_null(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.config.json"
    path.write_text(json.dumps({"rate_limit": {"pause_at_utilization": None}, "budget": {"stage_usd": 2.5}}))
    config = load_config(path, {})
    assert config.rate_limit.pause_at_utilization is None
    assert config.budget == BudgetConfig(stage_usd=2.5)
    assert Config().rate_limit.pause_at_utilization == 0.95 and Config().budget == BudgetConfig()


def test_a_bad_cap_is_exit_2_and_nothing_is_written(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(budget={"milestone_usd": -2})

    out = project.run()

    assert out.returncode == 2
    assert "budget.milestone_usd" in out.stderr and "more than 0" in out.stderr
    assert not (project.root / ".orchestrator").exists()


# --- views -------------------------------------------------------------------------------


def snap(caps: BudgetConfig, run: RunState | None = None) -> render.Snapshot:
    rows = (
        MilestoneState("1A", 1, "A", cost_usd=1.25),
        MilestoneState("1B", 1, "B", cost_usd=0.5),
        MilestoneState("2A", 2, "C"),
    )
    return render.Snapshot(rows, {}, run or RunState(), NOW, {}, caps)


def test_the_budget_line_shows_spend_against_each_cap() -> None:
    line = render.budget_line(snap(BudgetConfig(run_usd=5.0, stage_usd=2.0, milestone_usd=1.5)))
    assert line == (
        "Budget: run $1.75 of $5.00 · stage 1 $1.75 of $2.00 · stage 2 $0.00 of $2.00 · "
        "each milestone $1.50 (most: 1A $1.25)"
    )
    assert render.budget_line(snap(BudgetConfig())) == ""


def test_tasks_md_and_json_show_the_caps() -> None:
    s = snap(BudgetConfig(run_usd=5.0, stage_usd=2.0, milestone_usd=1.5))
    assert "Budget: run $1.75 of $5.00" in render.tasks_markdown(s)
    data = render.status_json(s)
    assert data["budget"] == {"run_usd": 5.0, "stage_usd": 2.0, "milestone_usd": 1.5, "run_spent_usd": 1.75}
    assert [st["budget_usd"] for st in data["stages"]] == [2.0, 2.0]
    assert {m["budget_usd"] for m in data["milestones"]} == {1.5}
    assert "| $1.25 of $1.50 |" in render.tasks_markdown(s)


def test_a_milestones_own_agent_budget_is_its_cap_in_the_views() -> None:
    s = snap(BudgetConfig(milestone_usd=1.5))._replace(agents={"1A": {"budget_usd": 1.0}, "1B": {"budget_usd": 9.0}})
    assert [m["budget_usd"] for m in render.status_json(s)["milestones"]] == [1.0, 1.5, 1.5]
    assert [render.spend(m, s) for m in s.milestones] == ["$1.25 of $1.00", "$0.50 of $1.50", "$0.00 of $1.50"]
    assert render.spend(s.milestones[0], snap(BudgetConfig())) == "$1.25"


def test_a_hold_shows_its_own_banner() -> None:
    reason = "holding new starts: 5-hour window at 96 % · resets 14:00"
    banner = render.pause_banner(RunState(paused_until=NOW + 90, pause_reason=reason), NOW)
    assert banner == f"{reason} (new agents start in 01m30s)"
    assert budget.pause_line(reason, "14:00:02").startswith(reason)
    assert budget.pause_line("limit", "14:00:02") == "usage limit: limit · every task waits until 14:00:02"


def test_an_empty_plan_shows_no_milestone_cap_line() -> None:
    empty = render.snapshot(Plan(()), {}, RunState(), NOW, caps=BudgetConfig(milestone_usd=1.0))
    assert render.budget_line(empty) == ""


def test_a_hold_is_announced_as_a_hold() -> None:
    sent: list[tuple[str, str]] = []

    class Recorder:
        def send(self, event: str, message: str, **_fields: Any) -> None:
            sent.append((event, message))

    reason = "holding new starts: 5-hour window at 96 % · resets 14:00"
    announcer = Announcer(Recorder())  # type: ignore[arg-type]
    announcer.observe(snap(BudgetConfig()))  # the baseline
    announcer.observe(snap(BudgetConfig(), RunState(paused_until=NOW + 60, pause_reason=reason)))

    assert [event for event, _ in sent] == ["usage_limit"]
    assert sent[0][1].startswith(f"{reason}: new agents wait until ")


# --- the runner with the scripted agent (a preset of your own that reports a cost) ---------


def result_line(cost: float) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": cost})


def started(project: Project) -> list[str]:
    return [c["milestone"] for c in project.agent_calls() if c["event"] == "start"]


def test_a_stage_cap_holds_back_the_stage_and_resume_goes_on(project: Project) -> None:
    for mid in ("1A", "1B"):
        project.milestone(mid)
    project.milestone("2A")
    project.commit_plan()
    project.script({"1A": {"implement": [{"write": {"1A.txt": "A\n"}, "print": [result_line(1.5)]}]}})
    project.configure(max_parallel_tasks=1, review={"enabled": False}, budget={"stage_usd": 1.0})

    first = project.run()

    assert first.returncode == 1, first.stdout + first.stderr
    assert "budget reached: stage 1 spent $1.50 of $1.00 (budget.stage_usd)" in first.stdout
    assert started(project) == ["1A"]
    assert project.statuses() == {"1A": "done", "1B": "interrupted", "2A": "pending"}
    assert "Budget: stage 1 $1.50 of $1.00 · stage 2 $0.00 of $1.00" in (project.root / "TASKS.md").read_text()
    shown = project.run("watch", "--once").stdout + project.run("status").stdout
    assert shown.count("Budget: stage 1 $1.50 of $1.00 · stage 2 $0.00 of $1.00") == 2, shown

    project.configure(max_parallel_tasks=1, review={"enabled": False}, budget={"stage_usd": 5.0})
    resumed = project.run("--resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert started(project) == ["1A", "1B", "2A"]  # 1A was not redone
    assert sorted(project.trailers()) == ["1A", "1B", "2A"]


def test_a_run_cap_in_dependencies_mode_stops_new_starts_and_resume_goes_on(project: Project) -> None:
    project.milestone("1A")
    project.milestone("2A", deps=["1A"])
    project.commit_plan()
    project.script({"1A": {"implement": [{"write": {"1A.txt": "A\n"}, "print": [result_line(2.0)]}]}})
    settings: dict[str, Any] = {"max_parallel_tasks": 1, "review": {"enabled": False}, "schedule": "dependencies"}
    project.configure(**settings, budget={"run_usd": 2.0})

    first = project.run()

    assert first.returncode == 1, first.stdout + first.stderr
    assert "budget reached: the run spent $2.00 of $2.00 (budget.run_usd)" in first.stdout
    assert started(project) == ["1A"]
    assert project.status_json()["budget"] == {
        "run_usd": 2.0,
        "stage_usd": None,
        "milestone_usd": None,
        "run_spent_usd": 2.0,
    }

    project.configure(**settings, budget={"run_usd": 3.0})
    resumed = project.run("--resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert started(project) == ["1A", "2A"]
    assert sorted(project.trailers()) == ["1A", "2A"]


def test_when_a_cap_ends_a_graph_run_the_failed_and_the_blocked_are_still_named(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("2A", deps=["1A"])
    project.milestone("2B", deps=["1B"])
    project.commit_plan()
    # 1A writes nothing (its exit criterion fails); then 1B's cost reaches the run's cap
    project.script(
        {
            "1A": {"implement": [{"print": [result_line(0.5)]}], "remediate": [{"print": [result_line(0.5)]}]},
            "1B": {"implement": [{"write": {"1B.txt": "B\n"}, "print": [result_line(2.0)]}]},
        }
    )
    project.configure(max_parallel_tasks=1, review={"enabled": False}, schedule="dependencies", budget={"run_usd": 2.5})

    out = project.run()

    assert out.returncode == 1, out.stdout + out.stderr
    assert "budget reached" in out.stdout
    assert "  1A failed:" in out.stdout
    assert "blocked, waiting for them: 2A" in out.stdout

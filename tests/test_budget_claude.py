"""Budgets and the hold before a usage limit, with the real Claude Code CLI against the fake API.

The fake reports a chosen number of input tokens per answer, which the CLI prices into its
`total_cost_usd` (about $3 a million on the OAuth default model, $5 with an API key); it sends
the usage-warning headers that make the CLI (in OAuth mode) print a `rate_limit_event` with
status allowed_warning. Reset times are a few seconds ahead of the real clock, and the
requests' arrival times prove that nothing started before the reset plus the grace.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import fake_anthropic as fa
import pytest
from conftest import Project
from fake_anthropic import FakeAnthropic, RecordedRequest
from test_claude_integration import WAIT, ClaudeProject, finish, wait_until

COSTLY = 1_000_000  # input tokens: $3 or more per answer


@pytest.fixture
def cp(project: Project, fake_anthropic: FakeAnthropic, claude_cli: str, tmp_path: Path) -> ClaudeProject:
    return ClaudeProject(project, fake_anthropic, claude_cli, tmp_path / "scratch")


def two_milestones(cp: ClaudeProject, **config: object) -> None:
    """1A and 1B in one stage, one at a time (1A first), each writing its file."""
    for mid in ("1A", "1B"):
        cp.p.milestone(mid, exit_checks=[f"Its file exists (`test -f {mid}.txt`)"])
    cp.p.commit_plan()
    cp.configure(max_parallel_tasks=1, **config)


def set_config(cp: ClaudeProject, section: str, **values: object) -> None:
    path = cp.p.root / "orchestrator.config.json"
    data = json.loads(path.read_text())
    data[section] = {**data.get(section, {}), **values}
    path.write_text(json.dumps(data))


# --- budgets --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["config", "agent section"])
def test_a_milestone_over_its_budget_is_stopped_mid_run_and_fails(cp: ClaudeProject, where: str) -> None:
    section = "\n## Agent\n- budget_usd: 1\n" if where == "agent section" else ""
    cp.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"], extra=section)
    cp.p.commit_plan()
    cp.configure(retry_attempts=2, **({"budget": {"milestone_usd": 1.0}} if where == "config" else {}))
    answers = (fa.write("1A.txt", "A\n"), fa.write("more.txt", "B\n"), fa.text("A done."))
    cp.script("1A", *(fa.charged(answer, COSTLY) for answer in answers))

    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 1, out.stdout + out.stderr
    record = cp.milestone_state("1A")
    assert record["status"] == "failed"
    assert record["cost_usd"] >= 3.0
    assert record["reason"] == f"budget reached (${record['cost_usd']:.2f} of $1.00)"
    assert "budget reached ($" in out.stdout
    # Claude got --max-budget-usd with what was left and stopped after the first costly answer;
    # the runner started no other agent (no retry, no review).
    assert len(cp.requests_of("1A")) == 1
    assert "Reached maximum budget" in cp.log("1A")


def test_a_run_cap_stops_new_starts_and_resume_goes_on_after_raising_it(cp: ClaudeProject) -> None:
    two_milestones(cp, budget={"run_usd": 1.0})
    cp.script("1A", fa.charged(fa.write("1A.txt", "A\n"), COSTLY), fa.text("A done."))
    cp.script("1B", fa.write("1B.txt", "B\n"), fa.text("B done."))

    first = cp.p.run(timeout=WAIT)

    assert first.returncode == 1, first.stdout + first.stderr
    assert "budget reached" in first.stdout
    assert cp.requests_of("1B") == []  # 1B's agent never started
    state = cp.p.status_json()
    assert state["run"]["status"] == "failed" and "budget reached" in state["run"]["message"]
    assert state["budget"]["run_usd"] == 1.0 and state["budget"]["run_spent_usd"] >= 3.0
    assert {m["id"]: m["status"] for m in state["milestones"]} == {"1A": "done", "1B": "interrupted"}
    status = cp.p.run("status").stdout
    assert "Budget: run $" in status and " of $1.00" in status
    assert "budget reached" in cp.milestone_state("1B")["reason"]
    requests_of_1a = len(cp.requests_of("1A"))

    refused = cp.p.run("--resume", timeout=WAIT)  # the cap still stands: still nothing starts
    assert refused.returncode == 1 and "budget reached" in refused.stdout, refused.stdout
    assert cp.requests_of("1B") == []

    set_config(cp, "budget", run_usd=100.0)
    resumed = cp.p.run("--resume", timeout=WAIT)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(cp.requests_of("1A")) == requests_of_1a  # nothing of 1A was redone
    assert len(cp.requests_of("1B")) == 2
    assert cp.p.trailers() == ["1B", "1A"] or sorted(cp.p.trailers()) == ["1A", "1B"]
    after = cp.p.status_json()
    assert after["budget"]["run_spent_usd"] >= 3.0  # the earlier run's spend still counts
    assert "Budget: run $" in (cp.p.root / "TASKS.md").read_text()


# --- the hold before a usage limit -----------------------------------------------------


class Warning:
    """Answers carrying a usage warning whose reset is fixed when the first one is served."""

    def __init__(self, utilization: float, ahead: float) -> None:
        self.utilization = utilization
        self.ahead = ahead
        self.reset: int | None = None
        self._lock = threading.Lock()

    def answer(self, reply: fa.Reply) -> fa.Respond:
        def serve(_request: RecordedRequest) -> fa.Item:
            with self._lock:
                if self.reset is None:
                    self.reset = int(time.time() + self.ahead)
            return fa.warned(reply, self.utilization, self.reset)

        return fa.respond(serve)


GRACE = 0.5


def held_milestones(cp: ClaudeProject, warning: Warning) -> None:
    two_milestones(cp, oauth=True, rate_limit={"grace_seconds": GRACE, "pause_at_utilization": 0.95})
    cp.script("1A", warning.answer(fa.write("1A.txt", "A\n")), warning.answer(fa.text("A done.")))
    cp.script("1B", fa.write("1B.txt", "B\n"), fa.text("B done."))


def first_of_1b_after(cp: ClaudeProject, reset: int) -> None:
    first_b = cp.requests_of("1B")[0]
    assert cp.wall(first_b) >= reset + GRACE, (cp.wall(first_b), reset)


def test_a_usage_warning_holds_new_starts_until_the_reset(cp: ClaudeProject) -> None:
    warning = Warning(0.96, ahead=6)
    held_milestones(cp, warning)

    runner = cp.start()
    try:
        wait_until(lambda: cp.p.paused_until() > time.time(), what="the persisted hold")
        status = cp.p.run("status").stdout
    finally:
        code, printed = finish(runner)

    assert code == 0, printed
    assert warning.reset is not None
    resets = time.strftime("%H:%M", time.localtime(warning.reset))
    said = f"holding new starts: 5-hour window at 96 % · resets {resets}"
    assert said in printed and said in status, printed + status
    assert cp.p.show("1A.txt") == "A\n" and cp.p.show("1B.txt") == "B\n"
    assert len(cp.requests_of("1A")) == 2  # 1A's running agent was not cut off
    first_of_1b_after(cp, warning.reset)


def test_a_warning_below_the_threshold_or_a_plain_allowed_changes_nothing(cp: ClaudeProject) -> None:
    warning = Warning(0.90, ahead=30)
    held_milestones(cp, warning)
    late = fa.usage_warning(0.99, int(time.time()) + 3600)  # 80 % of the window gone: a plain "allowed"
    del late["anthropic-ratelimit-unified-5h-surpassed-threshold"]
    cp.server.set_answers(headers=late)

    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr
    assert warning.reset is not None
    assert cp.wall(cp.requests_of("1B")[0]) < warning.reset  # not held
    assert "holding" not in out.stdout
    assert cp.p.paused_until() == 0.0
    assert '"allowed_warning"' in cp.log("1A") and '"status":"allowed"' in cp.log("1B")


def test_a_restarted_runner_keeps_holding(cp: ClaudeProject) -> None:
    warning = Warning(0.97, ahead=8)
    held_milestones(cp, warning)

    runner = cp.start()
    try:
        wait_until(lambda: cp.milestone_state("1A")["status"] == "done", what="1A done")
        assert cp.p.paused_until() > time.time()
    finally:
        runner.kill()  # a crash while holding
        finish(runner)
    assert cp.requests_of("1B") == []

    code, printed = finish(cp.start("--resume"))

    assert code == 0, printed
    assert warning.reset is not None
    assert "holding new starts: 5-hour window at 97 %" in printed
    first_of_1b_after(cp, warning.reset)
    assert cp.p.show("1B.txt") == "B\n"

"""Watchdogs through the whole runner: a killed agent is retried once, then its milestone fails.

The real CLI under the idle watchdog is in test_claude_integration.py; these use the scripted
fake agent, which hangs silently.
"""

from __future__ import annotations

import pytest
from conftest import Project


@pytest.mark.parametrize(
    ("agent", "watchdog"),
    [
        # The idle watchdog (a stall) starts a fresh attempt instead: tests/test_resilience.py.
        ({"idle_timeout_minutes": 1, "timeout_minutes": 0.02}, "timeout"),  # 1.2 s in all
    ],
)
def test_a_watchdog_kill_is_retried_once_then_the_milestone_fails(
    project: Project, agent: dict[str, float], watchdog: str
) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(retry_attempts=3, agent=agent)
    project.script({"1A": {"implement": [{"hang": True}]}})

    out = project.run(timeout=60)

    assert out.returncode == 1, out.stdout + out.stderr
    starts = [c for c in project.agent_calls() if c["event"] == "start" and c["role"] == "implement"]
    assert len(starts) == 2  # retry_attempts would allow 4: a kill counts as transient once
    assert not [c for c in project.agent_calls() if c["event"] == "end"]  # both were killed, not ended
    record = project.status_json()["milestones"][0]
    assert record["status"] == "failed"
    assert record["reason"] == f"transient: killed by the {watchdog} watchdog"
    log = (project.root / "logs" / "1A.log").read_text()
    assert f"transient: killed by the {watchdog} watchdog; retrying" in log

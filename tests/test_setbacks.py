"""Setbacks through the whole runner: a killed agent is retried once, then its milestone fails;
an aider run that exits 0 having changed nothing is not a success.

The real CLI under the idle watchdog is in test_claude_integration.py; these use the scripted
fake agent, which hangs silently or stands in for aider.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import FAKE_AGENT, Project


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


def named_like(tmp_path: Path, cli: str) -> Path:
    """An executable called like a real agent CLI that runs the scripted fake agent (flags ignored)."""
    path = tmp_path / "bin" / cli
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AGENT}" "$@"\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("retry_attempts", [1, 0])
def test_aider_exiting_0_having_changed_nothing_is_not_a_success(
    project: Project, tmp_path: Path, retry_attempts: int
) -> None:
    project.milestone("1A")
    project.commit_plan()
    aider = named_like(tmp_path, "aider")
    project.configure(
        retry_attempts=retry_attempts,
        review={"enabled": False},
        agent={"preset": "aider", "command": None, "executable": str(aider)},
    )
    gave_up = {"print": ["Tokens: 2.1k sent, 0 received."], "exit": 0}  # nothing in its output says why
    project.script({"1A": {"implement": [gave_up, {"write": {"1A.txt": "A\n"}}]}})

    out = project.run(timeout=60)

    starts = [c for c in project.agent_calls() if c["event"] == "start" and c["role"] == "implement"]
    assert len(starts) == 1 + retry_attempts
    if retry_attempts:
        assert out.returncode == 0, out.stdout + out.stderr
        assert project.show("1A.txt") == "A\n"
        assert "aider exited 0 without changing anything; retrying" in (project.root / "logs" / "1A.log").read_text()
    else:
        assert out.returncode == 1
        assert project.status_json()["milestones"][0]["reason"] == "transient: aider exited 0 without changing anything"

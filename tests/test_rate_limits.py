"""RateLimitManager: how long a usage limit pauses every task, backoff, classification per preset.

Unit tests run on a fake clock whose sleep advances it; the persisted-pause test runs the
real CLI process twice on a real repository with the scripted fake agent.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ORCHESTRATOR, Project

from advanced import RateLimitManager
from orchestrator_lib import config as configuration
from orchestrator_lib.agents import AgentRun

DATA = Path(__file__).parent / "data" / "limits"
NOW = 1_800_000_000.0


class FakeClock:
    """time() and a sleep that moves it on; records every nap."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.naps: list[float] = []
        self.on_sleep: list[object] = []  # callables run before each nap

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        for hook in list(self.on_sleep):
            hook()  # type: ignore[operator]
        self.naps.append(seconds)
        self.now += seconds
        return False


def manager(clock: FakeClock, **rate_limit: float) -> RateLimitManager:
    settings = {"grace_seconds": 2.0, "text_reset_margin_seconds": 60.0, **rate_limit}
    cfg = configuration.replace(
        configuration.Config(),
        claude_rate_limit_wait=300.0,
        rate_limit=configuration.RateLimitConfig(**settings),
    )
    return RateLimitManager(cfg, clock=clock.time, sleep=clock.sleep)


# --- how long a pause lasts -----------------------------------------------------------


def test_exact_reset_waits_the_grace_only() -> None:
    rl = manager(FakeClock())
    assert rl.pause(NOW + 100, "limit", exact=True) == NOW + 102


def test_reset_read_from_text_gets_the_minute_margin() -> None:
    rl = manager(FakeClock())
    assert rl.pause(NOW + 100, "limit") == NOW + 100 + 60 + 2


def test_text_reset_a_few_seconds_ago_still_waits_for_the_rest_of_its_minute() -> None:
    # "resets 7:37am" printed at 7:37:20 when the limit lifts at 7:37:53: not over yet.
    rl = manager(FakeClock())
    assert rl.pause(NOW - 20, "limit") == NOW - 20 + 62


@pytest.mark.parametrize(("reset", "exact"), [(None, False), (NOW - 5, True), (NOW - 3600, False)])
def test_no_usable_reset_waits_claude_rate_limit_wait(reset: float | None, exact: bool) -> None:
    rl = manager(FakeClock())
    assert rl.pause(reset, "limit", exact=exact) == NOW + 300


def test_the_latest_pause_wins_and_an_earlier_one_does_not_shorten_it() -> None:
    rl = manager(FakeClock())
    rl.pause(NOW + 100, "first", exact=True)
    rl.pause(NOW + 50, "second", exact=True)
    assert (rl.paused_until, rl.reason) == (NOW + 102, "first")
    rl.pause(NOW + 500, "third", exact=True)
    assert (rl.paused_until, rl.reason) == (NOW + 502, "third")


# --- waiting --------------------------------------------------------------------------


def test_wait_returns_at_the_end_of_the_pause_in_short_naps() -> None:
    clock = FakeClock()
    rl = manager(clock)
    rl.pause(NOW + 10.5, "limit", exact=True)

    assert rl.wait_if_paused(threading.Event()) is True
    assert clock.now == pytest.approx(NOW + 12.5)
    assert max(clock.naps) <= 1.0  # a stop of this one task is seen within a second


def test_wait_without_pause_does_not_sleep() -> None:
    clock = FakeClock()
    assert manager(clock).wait_if_paused(threading.Event()) is True
    assert clock.naps == []


def test_a_pause_made_by_another_task_while_waiting_extends_the_wait() -> None:
    clock = FakeClock()
    rl = manager(clock)
    rl.pause(NOW + 5, "first", exact=True)
    clock.on_sleep.append(lambda: clock.now >= NOW + 3 and rl.pause(NOW + 20, "second", exact=True))

    assert rl.wait_if_paused(threading.Event()) is True
    assert clock.now == pytest.approx(NOW + 22)


def test_a_stop_ends_the_wait() -> None:
    clock = FakeClock()
    rl = manager(clock)
    rl.pause(NOW + 3600, "limit", exact=True)
    stop = threading.Event()
    clock.on_sleep.append(lambda: clock.now >= NOW + 5 and stop.set())

    assert rl.wait_if_paused(stop) is False
    assert clock.now < NOW + 10


# --- backoff --------------------------------------------------------------------------


class Outcome:
    def __init__(self, retryable: bool) -> None:
        self.retryable = retryable


def test_transient_outcomes_back_off_exponentially_up_to_the_attempts() -> None:
    clock = FakeClock()
    rl = manager(clock, backoff_initial_seconds=10, backoff_max_seconds=25)
    calls: list[float] = []

    def attempt() -> Outcome:
        calls.append(clock.now)
        return Outcome(retryable=True)

    last = rl.retrying(4)(attempt)

    assert last.retryable and len(calls) == 4  # the last outcome comes back, not an exception
    waits = [b - a for a, b in itertools.pairwise(calls)]
    assert 10 <= waits[0] <= 11 and 20 <= waits[1] <= 21  # doubling, plus up to 1 s of jitter
    assert 25 <= waits[2] <= 26  # capped by backoff_max_seconds


def test_a_final_outcome_is_not_retried() -> None:
    clock = FakeClock()
    calls = []
    manager(clock).retrying(5)(lambda: calls.append(1) or Outcome(retryable=False))
    assert calls == [1] and clock.naps == []


def test_a_stop_cuts_the_backoff_short() -> None:
    clock = FakeClock()
    rl = manager(clock, backoff_initial_seconds=600, backoff_max_seconds=600)
    stop = threading.Event()
    calls: list[float] = []

    def attempt() -> Outcome:
        calls.append(clock.now)
        stop.set()  # e.g. another task's agent could not authenticate
        return Outcome(retryable=True)

    rl.retrying(2, stop)(attempt)

    assert len(calls) == 2 and calls[1] - calls[0] < 2


# --- classification per preset --------------------------------------------------------


def capture(name: str) -> tuple[int, str]:
    folder = DATA / name
    output = (folder / "stdout.txt").read_text() + (folder / "stderr.txt").read_text()
    return int((folder / "rc.txt").read_text()), output


def run_of(returncode: int | None, output: str, killed: str | None = None) -> AgentRun:
    return AgentRun(returncode, output, killed, 1.0, 123)


@pytest.mark.parametrize(
    ("preset", "name", "kind", "exact"),
    [
        ("claude", "oauth_limit_streamjson", "usage_limit", True),  # rate_limit_event resetsAt
        ("claude", "b11_429_oauth_unified", "usage_limit", False),  # text only: minute precision
        ("claude", "b13_429_oauth_plain_r0", "transient", False),  # "not your usage limit"
        ("claude", "c5_529_streamjson_r2", "transient", False),
        ("claude", "e_stream", "ok", False),
        ("codex", "codex_429", "transient", False),
        ("aider", "aider_429", "transient", False),  # exit 0 after giving up: read from its output
    ],
)
def test_captures_classify_per_preset(preset: str, name: str, kind: str, exact: bool) -> None:
    returncode, output = capture(name)
    found = manager(FakeClock()).classify(preset, run_of(returncode, output))
    assert (found.kind, found.reset_exact) == (kind, exact)
    assert kind != "usage_limit" or found.reset_at is not None


def test_aider_capture_exits_zero_yet_is_not_a_success() -> None:
    returncode, output = capture("aider_429")
    assert returncode == 0
    assert manager(FakeClock()).classify("aider", run_of(0, output)).kind == "transient"


@pytest.mark.parametrize(
    ("returncode", "kind"), [(0, "ok"), (1, "failed"), (41, "auth"), (42, "failed"), (53, "failed")]
)
def test_gemini_exit_codes(returncode: int, kind: str) -> None:
    found = manager(FakeClock()).classify("gemini", run_of(returncode, "some output\n"))
    assert found.kind == kind


def test_a_run_killed_by_a_watchdog_is_transient_unless_it_showed_a_limit() -> None:
    rl = manager(FakeClock())
    idle = rl.classify("claude", run_of(None, '{"type":"system","subtype":"init"}\n', killed="idle"))
    assert (idle.kind, idle.message) == ("transient", "killed by the idle watchdog")
    _, limited = capture("oauth_limit_streamjson")
    assert rl.classify("claude", run_of(None, limited, killed="timeout")).kind == "usage_limit"
    assert rl.classify("claude", run_of(None, "", killed="stopped")).kind == "failed"


# --- a persisted pause survives a restart ---------------------------------------------


def test_restarted_runner_keeps_waiting_for_a_persisted_pause(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(rate_limit={"grace_seconds": 0, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1})
    reset = int(time.time()) + 10  # room for a slow start on a busy machine
    limit = {"print": [f"Claude AI usage limit reached|{reset}"], "exit": 1}
    project.script({"1A": {"implement": [limit, {"write": {"1A.txt": "A\n"}}]}})

    first = subprocess.Popen(
        (sys.executable, str(ORCHESTRATOR)), cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while project.paused_until() != reset:
            assert time.monotonic() < deadline, "the pause was never persisted"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 130
    finally:
        first.kill()
        first.communicate(timeout=10)
    assert time.time() < reset  # stopped while paused

    second = project.run("--resume", timeout=60)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "every task waits until" in second.stdout
    starts = [c["start"] for c in project.agent_calls() if c["event"] == "start" and c["role"] == "implement"]
    assert len(starts) == 2  # the restarted runner started nothing before the reset
    assert starts[1] >= reset
    assert project.show("1A.txt") == "A\n"

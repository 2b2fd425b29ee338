"""The orchestrator driving the real Claude Code CLI against the fake Messages API.

Every test runs `orchestrator.py` as a real process on a real git repository, with
agent.preset "claude" pointing at the real CLI and the CLI pointing at FakeAnthropic
on 127.0.0.1. Scripts are keyed by worktree (".worktree/1A"), so parallel milestones
follow their own turns. Skipped locally without the CLI; failed in CI (see claude_cli).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fake_anthropic as fa
import pytest
from conftest import ORCHESTRATOR, Project
from fake_anthropic import FakeAnthropic, RecordedRequest

WAIT = 30.0  # the bound on every wait for the runner


class ClaudeProject:
    """A Project whose agent is the real Claude CLI talking to `server`."""

    def __init__(self, project: Project, server: FakeAnthropic, cli: str, scratch: Path) -> None:
        self.p = project
        self.server = server
        self.cli = cli
        self.scratch = scratch
        # received_at is time.monotonic(); this turns it into wall-clock time.
        self.wall_offset = time.time() - time.monotonic()

    def configure(self, oauth: bool = False, max_retries: int = 0, **overrides: Any) -> None:
        env = fa.claude_env(self.server, self.scratch, oauth=oauth, max_retries=max_retries)
        agent = {
            "preset": "claude",
            "command": None,
            "executable": self.cli,
            "env": env,
            "timeout_minutes": 1,
            "idle_timeout_minutes": 1,
            **overrides.pop("agent", {}),
        }
        self.p.configure(agent=agent, **{"review": {"enabled": False, "max_rounds": 1}, **overrides})

    def script(self, mid: str, *items: fa.Item) -> None:
        self.server.add_script(items, cwd_contains=f".worktree/{mid}")

    def requests_of(self, mid: str) -> list[RecordedRequest]:
        return [r for r in self.server.main_requests if r.cwd and r.cwd.endswith(f".worktree/{mid}")]

    def wall(self, request: RecordedRequest) -> float:
        return request.received_at + self.wall_offset

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            (sys.executable, str(ORCHESTRATOR), *args),
            cwd=self.p.root,
            env={**_clean_env(), "NO_COLOR": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def milestone_state(self, mid: str) -> dict[str, Any]:
        return next(m for m in self.p.status_json()["milestones"] if m["id"] == mid)

    def log(self, mid: str) -> str:
        path = self.p.root / "logs" / f"{mid}.log"
        return path.read_text() if path.exists() else ""


def _clean_env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture
def cp(project: Project, fake_anthropic: FakeAnthropic, claude_cli: str, tmp_path: Path) -> ClaudeProject:
    return ClaudeProject(project, fake_anthropic, claude_cli, tmp_path / "scratch")


def finish(proc: subprocess.Popen[str], timeout: float = WAIT) -> tuple[int, str]:
    """Wait (bounded) for the runner; its exit code and everything it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the runner did not finish within {timeout}s:\n{out}\n{err}")
    return proc.returncode, out + err


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def session_of(request: RecordedRequest) -> str:
    return request.headers.get("x-claude-code-session-id", "")


def conversation(request: RecordedRequest) -> str:
    return json.dumps(request.messages)


# --- (1) a milestone done by the real CLI --------------------------------------------


def test_real_cli_writes_a_file_that_is_committed_and_merged(cp: ClaudeProject) -> None:
    cp.p.milestone("1A", "Hello", exit_checks=["The greeting exists (`test -f hello.txt`)"])
    cp.p.commit_plan()
    cp.configure(review={"enabled": True, "max_rounds": 1})
    cp.script("1A", fa.write("hello.txt", "hello from claude\n"), fa.text("Created hello.txt."))
    verdict = {"verdict": "pass", "findings": []}  # the reviewer, in the same worktree
    cp.script("1A", fa.tool_use("StructuredOutput", verdict))

    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr
    assert cp.p.show("hello.txt") == "hello from claude\n"
    assert cp.p.trailers() == ["1A"]
    implement, tool_result, review = cp.requests_of("1A")
    assert "You are implementing milestone 1A" in conversation(implement)
    assert "hello.txt" in conversation(tool_result) and '"tool_result"' in conversation(tool_result)
    assert "You are reviewing the work done for milestone 1A" in conversation(review)
    assert not {"Write", "Edit"} & {t["name"] for t in review.body["tools"]}  # the reviewer cannot edit
    assert session_of(review) != session_of(implement)
    record = cp.milestone_state("1A")
    assert record["status"] == "merged"
    assert record["cost_usd"] > 0 and record["input_tokens"] > 0 and record["output_tokens"] > 0
    assert record["attempts"] == 1


# --- (2) a subscriber usage limit pauses every task ------------------------------------


class LimitClock:
    """The usage limit's reset epoch, fixed when the first limited request arrives."""

    def __init__(self, ahead: int) -> None:
        self.ahead = ahead
        self.reset: int | None = None
        self.served = threading.Event()

    def limit(self, _request: RecordedRequest) -> fa.Item:
        if self.reset is None:
            self.reset = int(time.time()) + self.ahead
        self.served.set()
        return fa.usage_limit(self.reset)


def test_usage_limit_pauses_every_task_and_resumes_the_same_sessions(cp: ClaudeProject) -> None:
    for mid in ("1A", "1B"):
        cp.p.milestone(mid, exit_checks=[f"Its file exists (`test -f {mid}.txt`)"])
    cp.p.commit_plan()
    grace = 0.5
    cp.configure(
        oauth=True,
        retry_attempts=2,
        rate_limit={"grace_seconds": grace, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1},
    )
    clock = LimitClock(ahead=5)
    paused = cp.p.root / "logs" / "1A.log"

    def overloaded_once_1a_paused(_request: RecordedRequest) -> fa.Item:
        # 1B never sees the limit itself: it fails transiently after 1A paused the run,
        # so its retry proves the pause is shared by every task.
        deadline = time.monotonic() + WAIT
        while "usage limit:" not in (paused.read_text() if paused.exists() else ""):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return fa.overloaded()

    cp.script("1A", fa.respond(clock.limit), fa.write("1A.txt", "A\n"), fa.text("A done."))
    cp.script("1B", fa.respond(overloaded_once_1a_paused), fa.write("1B.txt", "B\n"), fa.text("B done."))

    runner = cp.start()
    try:
        wait_until(lambda: cp.p.paused_until() > time.time(), what="the persisted pause")
        status = cp.p.run("status")
    finally:
        code, printed = finish(runner)

    assert code == 0, printed
    assert clock.reset is not None
    assert "waiting for usage limit · resets " in status.stdout, status.stdout
    assert time.strftime("%H:%M", time.localtime(clock.reset + grace)) in status.stdout
    assert cp.p.show("1A.txt") == "A\n" and cp.p.show("1B.txt") == "B\n"
    first_a, *later_a = cp.requests_of("1A")
    first_b, *later_b = cp.requests_of("1B")
    assert len(later_a) == 2 and len(later_b) == 2
    assert cp.wall(first_a) < clock.reset
    for request in later_a + later_b:  # nothing reached the server until the limit lifted
        assert cp.wall(request) >= clock.reset + grace
    for first, later in ((first_a, later_a), (first_b, later_b)):
        assert {session_of(r) for r in later} == {session_of(first)}  # --resume of the same session
        assert "You are implementing milestone" in conversation(later[0])
    assert "The usage limit that interrupted you has lifted" in conversation(later_a[0])
    assert "You've hit your session limit" in cp.log("1A")
    assert cp.milestone_state("1A")["attempts"] == 2


# --- (3) transient errors: backoff, then the same session goes on ----------------------


def test_overloaded_then_success_backs_off_and_finishes(cp: ClaudeProject) -> None:
    cp.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    cp.p.commit_plan()
    cp.configure(retry_attempts=1)
    cp.script("1A", fa.overloaded(), fa.write("1A.txt", "A\n"), fa.text("Done."))

    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr
    assert cp.p.show("1A.txt") == "A\n"
    overloaded, retried, _ = cp.requests_of("1A")
    assert session_of(retried) == session_of(overloaded)
    assert "529 Overloaded" in cp.log("1A") and "retrying" in cp.log("1A")
    assert cp.milestone_state("1A")["attempts"] == 2


def test_overloaded_beyond_retry_attempts_fails_with_the_last_error(cp: ClaudeProject) -> None:
    cp.p.milestone("1A")
    cp.p.commit_plan()
    cp.configure(retry_attempts=1)
    cp.script("1A", fa.overloaded(), fa.overloaded(), fa.write("1A.txt", "never\n"))

    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 1
    assert len(cp.requests_of("1A")) == 2  # retry_attempts 1: two tries in all
    record = cp.milestone_state("1A")
    assert record["status"] == "failed"
    assert record["reason"].startswith("transient: API Error: 529 Overloaded")


# --- (4) a stalled stream: the idle watchdog kills the process group -------------------


def test_stalled_stream_is_killed_by_the_idle_watchdog_and_retried(cp: ClaudeProject) -> None:
    import psutil

    cp.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    cp.p.commit_plan()
    # 6 s without output: room for a slow CLI start on a busy machine, far below the 60 s stall
    cp.configure(retry_attempts=1, agent={"idle_timeout_minutes": 0.1})
    cp.script("1A", fa.stall(60), fa.write("1A.txt", "A\n"), fa.text("Done."))

    started = time.monotonic()
    runner = cp.start()
    try:
        assert cp.server.wait_for(lambda rs: any(r.is_main for r in rs), WAIT)
        pid = cp.milestone_state("1A")["agent_pid"]
        group = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
    finally:
        code, printed = finish(runner)

    assert code == 0, printed
    assert time.monotonic() - started < 40  # the stall lasts 60 s: the watchdog cut it
    assert group and not [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert cp.server.wait_idle(5)  # the stalled connection went with the killed CLI
    stalled, retried, _ = cp.requests_of("1A")
    assert "stream" in stalled.body and "You are implementing milestone 1A" in conversation(retried)
    notes = [line for line in cp.log("1A").splitlines() if line.startswith("[orchestrator]")]
    assert any("idle" in line for line in notes), notes  # the log says why the agent was killed
    assert cp.p.show("1A.txt") == "A\n"


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except OSError:
        return None


# --- (5) an invalid key stops the whole run at once ------------------------------------


def test_invalid_key_stops_the_run_at_once_with_the_fix(cp: ClaudeProject) -> None:
    cp.p.milestone("1A")
    cp.p.milestone("1B")
    cp.p.commit_plan()
    cp.configure(retry_attempts=3)

    def refused_once_1b_is_busy(_request: RecordedRequest) -> fa.Item:
        assert cp.server.wait_for(lambda rs: any(r.cwd and r.cwd.endswith("1B") for r in rs), WAIT)
        return fa.unauthorized()

    cp.script("1A", fa.respond(refused_once_1b_is_busy), fa.write("1A.txt", "never\n"))
    cp.script("1B", fa.stall(60), fa.write("1B.txt", "never\n"))  # busy when 1A's key is refused

    started = time.monotonic()
    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - started < 15  # 1B's agent was stopped, not waited for
    assert "Invalid API key" in out.stdout
    assert "ANTHROPIC_API_KEY" in out.stdout  # names the fix
    assert len(cp.requests_of("1A")) == 1  # an auth error is never retried
    assert len(cp.requests_of("1B")) == 1
    assert cp.server.wait_idle(5)
    statuses = cp.p.statuses()
    assert statuses["1A"] == "failed"
    assert statuses["1B"] != "running"
    assert cp.p.trailers() == []


# --- a restarted runner continues the CLI's own session --------------------------------


@pytest.mark.parametrize("session_kept", [True, False])
def test_restart_resumes_the_claude_session_or_starts_a_fresh_one(cp: ClaudeProject, session_kept: bool) -> None:
    import shutil
    import signal

    cp.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    cp.p.commit_plan()
    cp.configure()  # retry_attempts 0: a lost session must not cost an attempt
    cp.script("1A", fa.write("1A.txt", "A\n"), fa.stall(60), fa.text("Done."))

    first = cp.start()
    try:
        assert cp.server.wait_for(lambda rs: len([r for r in rs if r.is_main]) >= 2, WAIT)  # stalled after the write
        first.send_signal(signal.SIGTERM)
    finally:
        code, printed = finish(first)
    assert code == 130, printed
    (first_session,) = {session_of(r) for r in cp.requests_of("1A")}
    if not session_kept:  # e.g. another machine, or a cleaned ~/.claude
        shutil.rmtree(cp.scratch / "home" / ".claude" / "projects")

    second = cp.p.run("--resume", timeout=WAIT)

    assert second.returncode == 0, second.stdout + second.stderr
    assert cp.p.show("1A.txt") == "A\n"
    resumed = cp.requests_of("1A")[2]
    assert "an earlier attempt at this milestone was interrupted" in conversation(resumed)
    if session_kept:
        assert session_of(resumed) == first_session
        assert '"tool_result"' in conversation(resumed)  # the earlier turns came back with it
    else:
        assert session_of(resumed) != first_session
        assert "was never saved; starting a fresh one" in cp.log("1A")


# --- an exhausted context: a fresh session, told what is already there ----------------


def test_prompt_too_long_goes_on_in_a_fresh_session(cp: ClaudeProject) -> None:
    cp.p.milestone("1A", exit_checks=["Both parts exist (`test -f part1.txt && test -f part2.txt`)"])
    cp.p.commit_plan()
    cp.configure(retry_attempts=0)  # recovery.max_attempts bounds this, not retry_attempts
    too_long = fa.error(400, "prompt is too long: 212345 tokens > 200000 maximum")
    cp.script("1A", fa.write("part1.txt", "1\n"), too_long, fa.write("part2.txt", "2\n"), fa.text("Done."))

    out = cp.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr
    assert cp.p.show("part1.txt") == "1\n" and cp.p.show("part2.txt") == "2\n"
    _, refused, fresh, _ = cp.requests_of("1A")
    assert session_of(fresh) != session_of(refused)
    told = conversation(fresh)
    assert "an earlier attempt at this milestone was interrupted (context exhausted)" in told
    assert "part1.txt" in told  # what the exhausted session already wrote
    assert "Prompt is too long" in cp.log("1A")

"""The fake Messages API, and smoke tests that the real Claude Code CLI accepts it.

CLI tests need `claude_cli` (skipped locally without the CLI, failed in CI) and stay
well under 10 s each; every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fake_anthropic as fa
import pytest
from claude_support import run_claude, start_claude, stop_claude, stream_events
from fake_anthropic import FakeAnthropic, RecordedRequest


def make_workdir(tmp_path: Path, name: str = "1A") -> Path:
    path = tmp_path / "repo" / ".worktree" / name
    path.mkdir(parents=True)
    return path


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    events = stream_events(proc.stdout)
    assert events and events[-1]["type"] == "result", proc.stdout + proc.stderr
    return events[-1]


def limit_text(reset_epoch: int) -> str:
    """What the CLI prints: the reset time floored to the minute, ":00" left out."""
    at = datetime.fromtimestamp(reset_epoch, UTC)
    minutes = f":{at.minute:02d}" if at.minute else ""
    clock = f"{at.hour % 12 or 12}{minutes}{'am' if at.hour < 12 else 'pm'}"
    return f"You've hit your session limit · resets {clock} (UTC)"


def conversation_text(request: RecordedRequest) -> str:
    return json.dumps(request.messages)


# --- the real CLI ---------------------------------------------------------------


def test_write_turn_then_text_turn(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    work = make_workdir(tmp_path)
    script = [fa.write("hello.txt", "hello from the fake model\n"), fa.text("Created.")]
    fake_anthropic.add_script(script, cwd_contains=".worktree/1A")
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")

    proc = run_claude(claude_cli, work, env, "Create hello.txt", timeout=30)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "hello.txt").read_text() == "hello from the fake model\n"
    result = result_of(proc)
    assert result["is_error"] is False
    assert result["result"] == "Created."
    assert result["session_id"]
    assert result["total_cost_usd"] > 0
    first, second = fake_anthropic.main_requests
    assert first.cwd == str(work)
    assert '"tool_result"' in conversation_text(second)


def test_cli_reaches_the_api_soon_after_launch(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")
    launched = time.monotonic()

    run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    first_post = fake_anthropic.main_requests[0].received_at
    # Catches a CLI that waits on an outside host first (a network timeout is 30 s or more);
    # the start-up figure itself is a timing and belongs in bench/.
    assert first_post - launched < 15.0


def test_usage_limit_reports_reset(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    reset = int(time.time()) + 5
    fake_anthropic.add_script([fa.usage_limit(reset)])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", oauth=True, max_retries=1)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 1
    events = stream_events(proc.stdout)
    (limit,) = [e for e in events if e["type"] == "rate_limit_event"]
    assert limit["rate_limit_info"]["status"] == "rejected"
    assert limit["rate_limit_info"]["resetsAt"] == reset
    result = result_of(proc)
    assert result["api_error_status"] == 429
    assert result["result"] == limit_text(reset)
    assert len(fake_anthropic.main_requests) == 1  # a usage limit is never retried


def test_plain_429_for_a_subscriber_is_not_a_usage_limit(
    claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.add_script([fa.rate_limited()])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", oauth=True)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 1
    (limit,) = [e for e in stream_events(proc.stdout) if e["type"] == "rate_limit_event"]
    assert "resetsAt" not in limit["rate_limit_info"]  # "rejected", yet no reset
    assert "(not your usage limit)" in result_of(proc)["result"]


def test_overloaded_without_retries_fails(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.add_script([fa.overloaded()])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", max_retries=0)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 1
    result = result_of(proc)
    assert result["api_error_status"] == 529
    assert result["result"].startswith("API Error: 529 Overloaded.")
    assert len(fake_anthropic.main_requests) == 1


@pytest.mark.parametrize(
    ("oauth", "printed"),
    [
        (False, "Invalid API key · Fix external API key"),
        (True, "Not logged in · Please run /login"),
    ],
)
def test_unauthorized_prints_auth_text(
    claude_cli: str,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    oauth: bool,
    printed: str,
) -> None:
    fake_anthropic.add_script([fa.unauthorized()])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", oauth=oauth)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 1
    result = result_of(proc)
    assert result["api_error_status"] == 401
    assert result["result"] == printed


def test_stalled_stream_keeps_the_cli_waiting(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.add_script([fa.stall(60)])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")
    proc = start_claude(claude_cli, make_workdir(tmp_path), env, "hi")
    try:
        assert fake_anthropic.wait_for(lambda rs: any(r.is_main for r in rs), 20)
        time.sleep(3)
        assert proc.poll() is None  # still waiting on the silent stream
        assert not fake_anthropic.wait_idle(0)  # ... which the server holds open
    finally:
        stdout, _ = stop_claude(proc)

    assert fake_anthropic.wait_idle(5)  # the stall noticed its client was killed
    assert [e["type"] for e in stream_events(stdout)] == ["system"]


def test_stream_cut_short_is_resent_without_streaming(
    claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.add_script([fa.stall(1), fa.text("Recovered.")])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", max_retries=0)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 0
    assert result_of(proc)["result"] == "Recovered."
    cut, resent = fake_anthropic.main_requests
    assert cut.body["stream"] is True
    assert "stream" not in resent.body


def test_resume_sends_the_earlier_conversation(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    session_id = str(uuid.uuid4())
    work = make_workdir(tmp_path)
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")
    remembers = fa.respond(lambda request: fa.text("apple" if "apple" in conversation_text(request) else "?"))
    fake_anthropic.add_script([fa.text("The secret word is apple."), remembers])

    first = run_claude(claude_cli, work, env, "Remember a word", ["--session-id", session_id], 30)
    second = run_claude(claude_cli, work, env, "Which word?", ["--resume", session_id], 30)

    assert result_of(first)["session_id"] == session_id
    assert result_of(second)["session_id"] == session_id
    assert result_of(second)["result"] == "apple"
    resumed = conversation_text(fake_anthropic.main_requests[1])
    assert "Remember a word" in resumed
    assert "The secret word is apple." in resumed
    assert "Which word?" in resumed


def test_parallel_runs_follow_their_own_scripts(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    one, two = make_workdir(tmp_path, "1A"), make_workdir(tmp_path, "1B")
    fake_anthropic.add_script([fa.bash("printf one > one.txt"), fa.text("Ran it.")], ".worktree/1A")
    fake_anthropic.add_script([fa.write("two.txt", "two"), fa.text("Wrote it.")], ".worktree/1B")

    def run(work: Path) -> subprocess.CompletedProcess[str]:
        env = fa.claude_env(fake_anthropic, tmp_path / f"scratch-{work.name}")
        return run_claude(claude_cli, work, env, "Do your task", timeout=30)

    with ThreadPoolExecutor(2) as pool:
        proc_one, proc_two = pool.map(run, (one, two))

    assert result_of(proc_one)["result"] == "Ran it."
    assert result_of(proc_two)["result"] == "Wrote it."
    assert (one / "one.txt").read_text() == "one"
    assert (two / "two.txt").read_text() == "two"
    assert not (one / "two.txt").exists()


# --- the server alone -----------------------------------------------------------


def post(server: FakeAnthropic, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/v1/messages", json.dumps(body))
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def main_body(cwd: str) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "system": [{"type": "text", "text": f"Primary working directory: {cwd}\n"}],
        "tools": [{"name": "Write"}],
        "messages": [{"role": "user", "content": "hi"}],
    }


def reply_text(raw: bytes) -> str:
    return "".join(block["text"] for block in json.loads(raw)["content"])


def test_side_requests_do_not_consume_the_script(
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.add_script([fa.text("scripted")])
    side = {"model": "claude-test", "messages": [{"role": "user", "content": "x"}]}

    assert reply_text(post(fake_anthropic, side)[2]) == fa.SIDE_REPLY
    assert reply_text(post(fake_anthropic, main_body("/r"))[2]) == "scripted"
    assert reply_text(post(fake_anthropic, main_body("/r"))[2]) == "Done."


def test_scripts_follow_the_longest_matching_cwd(
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.add_script([fa.text("any")])
    fake_anthropic.add_script([fa.text("1A")], cwd_contains="/1A")
    fake_anthropic.add_script([fa.text("1AB")], cwd_contains="/1AB")

    assert reply_text(post(fake_anthropic, main_body("/w/1AB"))[2]) == "1AB"
    assert reply_text(post(fake_anthropic, main_body("/w/1AB"))[2]) == "1A"
    assert reply_text(post(fake_anthropic, main_body("/w/1AB"))[2]) == "any"
    assert fake_anthropic.requests[0].cwd == "/w/1AB"


def test_write_targets_the_request_cwd(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.add_script([fa.write("a/b.txt", "x")])

    (block,) = json.loads(post(fake_anthropic, main_body("/w/1A"))[2])["content"]

    assert block["input"] == {"file_path": "/w/1A/a/b.txt", "content": "x"}


def test_errors_carry_api_bodies_and_headers(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.add_script([fa.usage_limit(1_800_000_000)])

    status, headers, raw = post(fake_anthropic, main_body("/r"))

    assert status == 429
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-reset"] == "1800000000"
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"


def test_stop_releases_a_stalled_stream(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.add_script([fa.stall(60)])
    port = int(fake_anthropic.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    body = json.dumps({**main_body("/r"), "stream": True})
    conn.request("POST", "/v1/messages", body)
    response = conn.getresponse()
    assert response.readline() == b"event: message_start\n"

    started = time.monotonic()
    fake_anthropic.stop()

    assert time.monotonic() - started < 2
    assert response.read().startswith(b"data: ")  # then EOF, without message_stop
    conn.close()


# --- usage warnings and cost (issue 13) ----------------------------------------------


def rate_limit_events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [e["rate_limit_info"] for e in stream_events(proc.stdout) if e["type"] == "rate_limit_event"]


def test_warning_headers_make_the_oauth_cli_report_utilization(
    claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    reset = int(time.time()) + 3600
    answers = [fa.write("a.txt", "a"), fa.write("b.txt", "b"), fa.text("Done.")]
    fake_anthropic.add_script([fa.warned(a, u, reset) for a, u in zip(answers, (0.96, 0.96, 0.97), strict=True)])
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", oauth=True)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, second = rate_limit_events(proc)  # a second answer at the same utilization prints nothing
    assert first["status"] == second["status"] == "allowed_warning"
    assert first["utilization"] == 0.96 and second["utilization"] == 0.97
    assert first["resetsAt"] == reset and first["rateLimitType"] == "five_hour"


def test_warning_headers_are_ignored_with_an_api_key(
    claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.set_answers(headers=fa.usage_warning(0.96, int(time.time()) + 3600))
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rate_limit_events(proc) == []


def test_without_surpassed_threshold_a_late_window_is_a_plain_allowed(
    claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    headers = fa.usage_warning(0.96, int(time.time()) + 3600)  # 80 % of the 5-hour window gone
    del headers["anthropic-ratelimit-unified-5h-surpassed-threshold"]
    fake_anthropic.set_answers(headers=headers)
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch", oauth=True)

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    assert [info["status"] for info in rate_limit_events(proc)] == ["allowed"]


def test_reported_input_tokens_drive_the_cost(claude_cli: str, fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.add_script([fa.charged(fa.write("a.txt", "a"), 1_000_000)])
    fake_anthropic.set_answers(input_tokens=500_000)  # the second answer: the server's setting
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")

    proc = run_claude(claude_cli, make_workdir(tmp_path), env, "hi", timeout=30)

    result = result_of(proc)
    assert result["usage"]["input_tokens"] == 1_500_000
    per_token = result["total_cost_usd"] / 1_500_000
    assert 1e-6 <= per_token <= 2e-5, result  # priced per token: $1 to $20 a million

"""The orchestrator driving the real Codex CLI (`codex exec`, pinned in orchestrator.sh) against a
fake Responses API on 127.0.0.1.

Codex reads a custom provider from `-c` options (agent.extra_args): base_url, env_key and
wire_api="responses"; its home is a temp folder. The fake answers with a call of Codex's shell
tool that writes the file, then a message. Skipped locally without the CLI; failed in CI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import fake_openai as fo
import pytest
from agent_clis import CliProject
from conftest import Project
from fake_openai import FakeOpenAI, RecordedRequest

from orchestrator_lib.agents import AUTH_HINTS

WAIT = 60.0


class CodexProject(CliProject):
    def configure(self, **overrides: Any) -> None:
        (self.scratch / "codex-home").mkdir(parents=True, exist_ok=True)
        provider = {
            "name": '"fake"',
            "base_url": f'"{self.server.url}"',
            "env_key": '"FAKE_OPENAI_KEY"',
            "wire_api": '"responses"',
            "request_max_retries": "0",  # Codex's own retries would only slow the tests down
            "stream_max_retries": "0",
        }
        options = ["model_provider=fake", *(f"model_providers.fake.{k}={v}" for k, v in provider.items())]
        agent = {
            "preset": "codex",
            "executable": self.cli,
            "model": fo.MODEL,
            "extra_args": [arg for option in options for arg in ("-c", option)],
            "env": {"CODEX_HOME": str(self.scratch / "codex-home"), "FAKE_OPENAI_KEY": fo.FAKE_OPENAI_KEY},
            "timeout_minutes": 2,
            "idle_timeout_minutes": 1,
        }
        self.use(agent, **overrides)

    def requests_of(self, mid: str) -> list[RecordedRequest]:
        return [r for r in self.server.model_requests() if (r.cwd or "").endswith(f".worktree/{mid}")]

    def record(self, mid: str) -> dict[str, Any]:
        return next(m for m in self.p.status_json()["milestones"] if m["id"] == mid)


@pytest.fixture
def cx(project: Project, fake_openai: FakeOpenAI, codex_cli: str, tmp_path: Path) -> CodexProject:
    return CodexProject(project, fake_openai, codex_cli, tmp_path / "scratch")


def session_of(request: RecordedRequest) -> str:
    return str(request.body.get("prompt_cache_key", ""))  # Codex keys its cache by its thread id


def test_the_pinned_codex_is_the_one_installed(codex_cli: str) -> None:
    from agent_clis import pinned_version

    package = Path(codex_cli).resolve().parents[1] / "package.json"
    if package.is_file():  # an override through CODEX_CLI may be a plain binary
        assert json.loads(package.read_text())["version"] == pinned_version("codex")


def test_codex_implements_a_milestone_that_is_merged_with_its_tokens_counted(cx: CodexProject) -> None:
    cx.p.milestone("1A", "Hello", exit_checks=["The greeting exists (`test -f hello.txt`)"])
    cx.p.commit_plan()
    cx.configure(review={"enabled": True, "max_rounds": 1})
    cx.script("1A", fo.shell("printf 'hello from codex\\n' > hello.txt"), fo.say("Created hello.txt."))
    cx.script("1A", fo.say("- looks right\nVERDICT: PASS"))  # the reviewer, in the same worktree

    out = cx.p.run(timeout=WAIT * 2)

    assert out.returncode == 0, out.stdout + out.stderr
    assert cx.p.show("hello.txt") == "hello from codex\n"
    assert cx.p.trailers() == ["1A"]
    implement, tool_result, review = cx.requests_of("1A")
    assert "You are implementing milestone 1A" in implement.text
    assert '"function_call_output"' in tool_result.text  # Codex ran the command and sent its output
    assert "You are reviewing the work done for milestone 1A" in review.text
    assert session_of(review) != session_of(implement)
    record = cx.record("1A")
    assert record["status"] == "merged" and record["attempts"] == 1
    # Codex's turn.completed usage, two answers in the implementer's turn and one in the review's
    assert record["input_tokens"] == 3 * fo.INPUT_TOKENS and record["output_tokens"] == 3 * fo.OUTPUT_TOKENS
    assert cx.p.status_json()["totals"]["input_tokens"] == 3 * fo.INPUT_TOKENS
    assert f"{3 * (fo.INPUT_TOKENS + fo.OUTPUT_TOKENS):,} tokens" in (cx.p.root / "TASKS.md").read_text()
    assert "command_execution" in cx.log("1A")  # the agent's own transcript, in its log


def test_a_429_is_backed_off_and_retried_in_the_same_session(cx: CodexProject) -> None:
    cx.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    cx.p.commit_plan()
    backoff = 1.0
    cx.configure(retry_attempts=1, rate_limit={"backoff_initial_seconds": backoff, "backoff_max_seconds": backoff})
    cx.script("1A", fo.rate_limited(), fo.shell("printf 'A\\n' > 1A.txt"), fo.say("Done."))

    out = cx.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr
    assert cx.p.show("1A.txt") == "A\n"
    limited, retried, _ = cx.requests_of("1A")
    assert "exceeded retry limit, last status: 429 Too Many Requests" in cx.log("1A")  # the real error text
    assert "transient" in cx.log("1A") and "retrying" in cx.log("1A")
    assert retried.received_at - limited.received_at >= backoff * 0.5  # jitter takes up to half off
    assert session_of(retried) == session_of(limited)  # `codex exec resume <id>`
    assert cx.record("1A")["attempts"] == 2


def test_a_usage_limit_pauses_and_codex_resumes_its_own_session(cx: CodexProject) -> None:
    cx.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    cx.p.commit_plan()
    # The reset is "now": Codex prints it to the minute, so the runner waits claude_rate_limit_wait.
    cx.configure(
        retry_attempts=0, claude_rate_limit_wait=2, rate_limit={"grace_seconds": 0, "text_reset_margin_seconds": 0}
    )
    limit = {
        "type": "usage_limit_reached",
        "message": "The usage limit has been reached",
        "plan_type": "plus",
        "resets_at": int(time.time()),
    }
    cx.script("1A", fo.Error(429, {"error": limit}, ()), fo.shell("printf 'A\\n' > 1A.txt"), fo.say("Done."))

    out = cx.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr
    assert cx.p.show("1A.txt") == "A\n"
    assert "hit your usage limit" in cx.log("1A") and "usage limit:" in cx.log("1A")
    limited, resumed, _ = cx.requests_of("1A")
    assert resumed.received_at - limited.received_at >= 1.5
    assert session_of(resumed) == session_of(limited)  # the same Codex thread goes on
    assert "You are implementing milestone 1A" in resumed.text  # its history came along
    assert "The usage limit that interrupted you has lifted" in resumed.text
    assert cx.record("1A")["attempts"] == 2


def test_an_auth_failure_stops_every_task_with_the_fix(cx: CodexProject) -> None:
    cx.p.milestone("1A")
    cx.p.milestone("1B")
    cx.p.commit_plan()
    cx.configure(retry_attempts=3)

    def refused_once_1b_is_busy(_request: RecordedRequest) -> fo.Error:
        assert cx.server.wait_for(lambda rs: any((r.cwd or "").endswith("1B") for r in rs), WAIT)
        return fo.unauthorized()

    cx.script("1A", fo.respond(refused_once_1b_is_busy))
    cx.script("1B", cx.server.stall(WAIT))  # busy when 1A's key is refused

    started = time.monotonic()
    out = cx.p.run(timeout=WAIT)

    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - started < WAIT / 2  # 1B's agent was stopped, not waited for
    assert "unexpected status 401 Unauthorized" in out.stdout
    assert AUTH_HINTS["codex"] in out.stdout  # names the fix
    assert len(cx.requests_of("1A")) == 1  # an auth error is never retried
    statuses = cx.p.statuses()
    assert statuses["1A"] == "failed" and statuses["1B"] != "running"
    assert cx.p.trailers() == []
    assert fo.FAKE_OPENAI_KEY not in out.stdout + out.stderr


# --- reading Codex's output, without the CLI (lines as the pinned Codex printed them above) -------

CODEX_RUN = "\n".join(
    json.dumps(event)
    for event in (
        {"type": "thread.started", "thread_id": "01a234f8-4b2e-7903-a430-82703eff2251"},
        {"type": "turn.started"},
        {
            "type": "item.completed",
            "item": {"id": "item_1", "type": "command_execution", "command": "/bin/bash -lc 'ls'", "exit_code": 0},
        },
        {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "- fine\nVERDICT: PASS"}},
        {"type": "turn.completed", "usage": {"input_tokens": 2400, "cached_input_tokens": 400, "output_tokens": 68}},
    )
)


def test_the_report_of_a_codex_run_names_its_session_and_tokens() -> None:
    from orchestrator_lib.limits import read_report

    report = read_report("noise\n" + CODEX_RUN)
    assert (report.session_id, report.input_tokens, report.output_tokens) == (
        "01a234f8-4b2e-7903-a430-82703eff2251",
        2400,
        68,
    )
    assert report.cost_usd is None and report.is_error is False


def test_a_codex_reviewer_verdict_is_its_last_message(tmp_path: Path) -> None:
    from orchestrator_lib.review import read_verdict

    review = read_verdict(tmp_path / "none.json", CODEX_RUN)
    assert review is not None and review.passed and review.findings == ("fine",)


def test_codex_logs_read_as_a_transcript() -> None:
    from orchestrator_lib.transcript import readable

    lines = [readable(line) for line in CODEX_RUN.splitlines()]
    assert lines == [
        "[session 01a234f8-4b2e-7903-a430-82703eff2251]",
        None,
        "→ shell(command=/bin/bash -lc 'ls') exit 0; result: (empty)",
        "- fine",  # the first line of its message
        "[done] 2400 in / 68 out tokens",
    ]


def test_a_codex_session_is_resumed_with_exec_resume(tmp_path: Path) -> None:
    from orchestrator_lib.agents import build_invocation
    from orchestrator_lib.config import AgentConfig

    agent = AgentConfig(preset="codex", executable="codex", model="gpt-fake", extra_args=("-c", "x=1"))
    common: dict[str, Any] = {
        "role": "implement",
        "milestone_id": "1A",
        "worktree": tmp_path,
        "prompt": "go on",
        "prompt_file": tmp_path / "p.md",
        "base_env": {},
        "extra_env": {},
    }
    fresh = build_invocation(agent, resume_session=None, **common)
    resumed = build_invocation(agent, resume_session="01a2", **common)
    flags = ("--json", "--dangerously-bypass-approvals-and-sandbox", "--model", "gpt-fake")
    assert fresh.argv == ("codex", "exec", *flags, "-", "-c", "x=1") and fresh.session_id is None
    assert resumed.argv == ("codex", "exec", "resume", *flags, "01a2", "-", "-c", "x=1")
    assert resumed.session_id == "01a2" and resumed.stdin == "go on"


def test_a_milestones_model_and_effort_reach_codexs_requests(cx: CodexProject) -> None:
    # effort becomes `-c model_reasoning_effort=…`, Codex's own setting for the Responses API's reasoning.effort
    cx.p.milestone("1A", exit_checks=["It exists (`test -f a.txt`)"], extra="\n## Agent\n- effort: high\n")
    cx.p.milestone("1B", exit_checks=["It exists (`test -f b.txt`)"], extra="\n## Agent\n- model: other-model\n")
    cx.p.commit_plan()
    cx.configure()
    cx.script("1A", fo.shell("printf 'A\\n' > a.txt"), fo.say("Done."))
    cx.script("1B", fo.shell("printf 'B\\n' > b.txt"), fo.say("Done."))
    out = cx.p.run(timeout=WAIT * 2)
    assert out.returncode == 0, out.stdout + out.stderr
    first_a, first_b = cx.requests_of("1A")[0].body, cx.requests_of("1B")[0].body
    assert (first_a.get("reasoning") or {}).get("effort") == "high"
    assert (first_b.get("reasoning") or {}).get("effort") != "high"
    assert (first_a["model"], first_b["model"]) == (fo.MODEL, "other-model")

"""Each milestone its own agent, with the real Claude Code CLI against the fake Messages API.

The agent's executable is a small recording script that appends its argv to a file and then runs
the pinned CLI, so the test sees exactly the command line the runner built, and the CLI proves it
accepts every flag (it exits "error: unknown option" on one it does not know). Skipped locally
without the CLI; failed in CI (see claude_cli).
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import fake_anthropic as fa
import pytest
from conftest import Project
from fake_anthropic import FakeAnthropic, RecordedRequest
from test_claude_integration import WAIT, ClaudeProject

EXTRA_PROMPT = "Marker from the appended system prompt file: keep functions short."
VERDICT = {"verdict": "pass", "findings": []}


@pytest.fixture
def cp(project: Project, fake_anthropic: FakeAnthropic, claude_cli: str, tmp_path: Path) -> ClaudeProject:
    recorder = tmp_path / "claude-recording"
    recorder.write_text(
        f'#!/bin/sh\nprintf "%s\\0" "$@" >> "{tmp_path / "argv.log"}"\necho >> "{tmp_path / "argv.log"}"\n'
        f'exec "{claude_cli}" "$@"\n'
    )
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    return ClaudeProject(project, fake_anthropic, str(recorder), tmp_path / "scratch")


def argvs(cp: ClaudeProject) -> list[list[str]]:
    """Each recorded command line (arguments only), in start order."""
    text = (cp.scratch.parent / "argv.log").read_text()
    return [line.split("\0")[:-1] for line in text.splitlines() if line]


def after(argv: list[str], option: str, count: int = 1) -> list[str]:
    start = argv.index(option) + 1
    return argv[start : start + count]


def system_text(request: RecordedRequest) -> str:
    system = request.body.get("system")
    return json.dumps(system) if not isinstance(system, str) else system


def test_each_milestone_reaches_the_api_with_its_own_model_and_flags(cp: ClaudeProject) -> None:
    (cp.p.root / "prompts").mkdir()
    (cp.p.root / "prompts" / "extra.md").write_text(EXTRA_PROMPT + "\n")
    (cp.p.root / "mcp.json").write_text('{"mcpServers": {}}\n')
    agent_section = (
        "\n## Agent\n- model: claude-opus-4-5\n- effort: high\n- max_turns: 7\n- budget_usd: 4\n"
        "- append_system_prompt_file: prompts/extra.md\n- disallowed_tools: WebFetch, WebSearch\n"
        '- settings: {"includeCoAuthoredBy": false}\n- mcp_config: mcp.json\n- fallback_model: claude-sonnet-4-5\n'
    )
    cp.p.milestone("1A", exit_checks=["It exists (`test -f a.txt`)"], extra=agent_section)
    cp.p.milestone("1B", exit_checks=["It exists (`test -f env.txt`)"])
    cp.p.commit_plan()
    cp.configure(
        agent={"model": "claude-sonnet-4-5"},
        review={"enabled": True, "max_rounds": 1, "agent": {"model": "claude-haiku-4-5"}},
    )
    cp.script("1A", fa.write("a.txt", "A\n"), fa.text("Done."), fa.tool_use("StructuredOutput", VERDICT))
    # What Claude's Bash tool sees of the runner's environment and of the credentials
    probe = 'echo "scrub=${CLAUDE_CODE_SUBPROCESS_ENV_SCRUB:-unset} key=${ANTHROPIC_API_KEY:+visible}" > env.txt'
    cp.script("1B", fa.bash(probe), fa.text("Done."), fa.tool_use("StructuredOutput", VERDICT))

    out = cp.p.run(timeout=WAIT * 3)

    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(cp.p.trailers()) == ["1A", "1B"]
    models = {mid: [r.body.get("model") for r in cp.requests_of(mid)] for mid in ("1A", "1B")}
    # implement (a tool call, then its result), then the review: review.agent merged over agent
    assert models == {
        "1A": ["claude-opus-4-5", "claude-opus-4-5", "claude-haiku-4-5"],
        "1B": ["claude-sonnet-4-5", "claude-sonnet-4-5", "claude-haiku-4-5"],
    }
    implement_1a, _, review_1a = cp.requests_of("1A")
    assert EXTRA_PROMPT in system_text(implement_1a)
    assert EXTRA_PROMPT not in system_text(review_1a)  # the milestone's settings are its implementer's
    assert not {"WebFetch", "WebSearch"} & {t["name"] for t in implement_1a.body["tools"]}
    assert not {"Write", "Edit"} & {t["name"] for t in review_1a.body["tools"]}

    recorded = [a for a in argvs(cp) if "--max-turns" in a]
    assert len(recorded) == 1  # 1A's implementer alone
    argv = recorded[0]
    assert after(argv, "--model") == ["claude-opus-4-5"] and after(argv, "--effort") == ["high"]
    assert after(argv, "--max-turns") == ["7"] and after(argv, "--max-budget-usd") == ["4"]
    assert after(argv, "--append-system-prompt-file") == [str(cp.p.root / "prompts" / "extra.md")]
    assert after(argv, "--disallowedTools", 2) == ["WebFetch", "WebSearch"]
    assert json.loads(after(argv, "--settings")[0]) == {"includeCoAuthoredBy": False}
    assert after(argv, "--mcp-config") == [str(cp.p.root / "mcp.json")]
    assert after(argv, "--fallback-model") == ["claude-sonnet-4-5"]

    seen = cp.p.show("env.txt").split()
    if shutil.which("bwrap") and shutil.which("socat"):
        assert seen == ["scrub=1", "key="], "the Bash tool must not see the API key"
    else:  # Claude cannot scrub without its sandbox's programs: the run goes on without it, and says so
        assert seen[0] == "scrub=unset"
        assert "not installed: Claude Code needs" in out.stderr

    states = {m["id"]: m for m in cp.p.status_json()["milestones"]}
    assert states["1A"]["agent"] == {"preset": "claude", "model": "claude-opus-4-5", "effort": "high", "budget_usd": 4}
    assert states["1B"]["agent"]["model"] == "claude-sonnet-4-5"


def test_what_claude_refused_is_in_the_log_the_status_and_the_failure_reason(cp: ClaudeProject) -> None:
    cp.p.milestone(
        "1A", exit_checks=["It exists (`test -f a.txt`)"], extra="\n## Agent\n- permission_mode: acceptEdits\n"
    )
    cp.p.commit_plan()
    cp.configure()
    command = "curl -s http://127.0.0.1:9/data"  # acceptEdits allows edits only: headless, Bash is refused
    cp.script("1A", fa.bash(command), fa.text("I could not fetch the data."))

    out = cp.p.run(timeout=WAIT * 2)

    assert out.returncode == 1, out.stdout + out.stderr
    refused = f"refused by the agent's permissions: Bash ({command})"
    record = cp.milestone_state("1A")
    assert record["status"] == "failed"
    assert refused in record["reason"]
    assert record["permission_denials"] == [f"Bash ({command})"]
    assert refused in cp.p.run("status").stdout
    logs = cp.p.run("logs", "1A")
    assert refused in logs.stdout
    (argv,) = argvs(cp)
    assert after(argv, "--permission-mode") == ["acceptEdits"] and "--dangerously-skip-permissions" not in argv

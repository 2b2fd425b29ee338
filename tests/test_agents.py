"""The argv and environment each agent preset gets, checked against the CLIs' own docs.

claude   code.claude.com/docs/en/headless, cli-reference (-p, stream-json needs --verbose,
         --session-id / --resume); tests/test_claude_integration.py runs it for real
codex    openai/codex docs/exec.md and codex-rs/exec/src/cli.rs: `codex exec --json`,
         PROMPT "-" reads stdin, --dangerously-bypass-approvals-and-sandbox, -m/--model
aider    aider.chat/docs/scripting.html, docs/config/options.md: --message-file,
         --yes-always, --no-auto-commits, --no-gitignore, --no-check-update, --analytics-disable,
         --no-pretty
gemini   geminicli.com/docs/cli/headless: -p (appended to stdin), --yolo, exit codes 0/1/42/53
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator_lib import agents
from orchestrator_lib.config import AgentConfig

WORKTREE = Path("/work/repo/.worktree/1A")
PROMPT_FILE = Path("/work/repo/.orchestrator/prompts/1A-implement.md")


def invocation(agent: AgentConfig, role: str = "implement", resume: str | None = None, **env: str) -> agents.Invocation:
    return agents.build_invocation(
        agent,
        role=role,
        milestone_id="1A",
        worktree=WORKTREE,
        prompt="Do 1A",
        prompt_file=PROMPT_FILE,
        base_env={"PATH": "/usr/bin", "HOME": "/home/u", **env},
        extra_env={},
        resume_session=resume,
    )


def preset(name: str, **fields: Any) -> AgentConfig:
    return AgentConfig(preset=name, **fields)


# --- claude ---------------------------------------------------------------------------


def test_claude_new_session_is_pre_assigned() -> None:
    inv = invocation(preset("claude"))
    *argv, flag, session = inv.argv
    assert argv == [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]
    assert flag == "--session-id" and str(uuid.UUID(session)) == session
    assert inv.session_id == session
    assert inv.stdin == "Do 1A"  # the prompt goes on stdin, never into argv


def test_claude_each_new_session_gets_its_own_id() -> None:
    assert invocation(preset("claude")).session_id != invocation(preset("claude")).session_id


def test_claude_resume_continues_the_same_session() -> None:
    inv = invocation(preset("claude"), resume="3f0c1f6e-0000-4000-8000-000000000001")
    assert inv.argv[-2:] == ("--resume", "3f0c1f6e-0000-4000-8000-000000000001")
    assert "--session-id" not in inv.argv
    assert inv.session_id == "3f0c1f6e-0000-4000-8000-000000000001"


def test_claude_permission_mode_model_executable_and_extra_args() -> None:
    agent = preset(
        "claude",
        executable="/opt/claude/bin/claude",
        permission_mode="acceptEdits",
        model="opus",
        extra_args=("--max-turns", "40"),
    )
    argv = invocation(agent).argv
    assert argv[0] == "/opt/claude/bin/claude"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert "--dangerously-skip-permissions" not in argv
    assert argv[argv.index("--model") + 1] == "opus"
    assert argv[-2:] == ("--max-turns", "40")


def test_claude_reviewer_cannot_edit() -> None:
    argv = invocation(preset("claude"), role="review").argv
    start = argv.index("--disallowedTools") + 1
    assert argv[start : start + 3] == ("Edit", "Write", "NotebookEdit")  # one argument each


@pytest.mark.parametrize(("root", "expected"), [(True, "1"), (False, None)])
def test_claude_as_root_is_told_it_is_sandboxed(monkeypatch: pytest.MonkeyPatch, root: bool, expected: str) -> None:
    # As root, --dangerously-skip-permissions refuses to run unless IS_SANDBOX=1.
    monkeypatch.setattr(agents, "_is_root", lambda: root)
    assert invocation(preset("claude")).env.get("IS_SANDBOX") == expected
    assert invocation(preset("claude"), IS_SANDBOX="0").env["IS_SANDBOX"] == "0"  # the user's choice stands


# --- codex, aider, gemini -------------------------------------------------------------


def test_codex_exec_json_reads_the_prompt_from_stdin() -> None:
    inv = invocation(preset("codex", model="gpt-5-codex"))
    assert inv.argv == (
        "codex",
        "exec",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--model",
        "gpt-5-codex",
        "-",
    )
    assert inv.stdin == "Do 1A" and inv.session_id is None


def test_aider_reads_the_prompt_file_and_never_commits_or_asks() -> None:
    inv = invocation(preset("aider", model="sonnet"))
    assert inv.argv == (
        "aider",
        "--yes-always",
        "--no-auto-commits",  # the runner commits
        "--no-gitignore",  # and keeps .gitignore as the milestone left it
        "--no-check-update",  # --yes-always would accept an upgrade prompt
        "--analytics-disable",  # and the analytics question
        "--no-pretty",
        "--model",
        "sonnet",
        "--message-file",
        str(PROMPT_FILE),
    )


def test_gemini_headless_with_the_prompt_on_stdin() -> None:
    inv = invocation(preset("gemini", executable="/usr/local/bin/gemini"))
    assert inv.argv == ("/usr/local/bin/gemini", "--yolo", "-p", "Carry out the task described above.")
    assert inv.env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"  # else --yolo is turned off in a new worktree
    assert inv.stdin == "Do 1A"  # -p is appended to what stdin holds


@pytest.mark.parametrize("name", ["codex", "aider", "gemini"])
def test_extra_args_come_last_and_no_session_is_claimed(name: str) -> None:
    inv = invocation(preset(name, extra_args=("--verbose",)))
    assert inv.argv[-1] == "--verbose" and inv.session_id is None


# --- every preset ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["claude", "codex", "aider", "gemini", "demo"])
def test_every_agent_gets_the_contract_environment(name: str) -> None:
    env = invocation(preset(name, env={"HOME": "/private/home", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})).env
    assert env["ORCHESTRATOR_MILESTONE"] == "1A"
    assert env["ORCHESTRATOR_ROLE"] == "implement"
    assert env["ORCHESTRATOR_WORKTREE"] == str(WORKTREE)
    assert env["ORCHESTRATOR_PROMPT_FILE"] == str(PROMPT_FILE)
    assert env["HOME"] == "/private/home"  # agent.env wins over the runner's environment
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["PATH"] == "/usr/bin"


def test_command_preset_expands_placeholders() -> None:
    command = ("my-agent", "--task", "{prompt_file}", "--id={milestone}", "{role}", "{worktree}")
    agent = preset("command", command=command)
    assert invocation(agent).argv == ("my-agent", "--task", str(PROMPT_FILE), "--id=1A", "implement", str(WORKTREE))


@pytest.mark.parametrize(
    ("name", "names_the_fix"),
    [
        ("claude", "ANTHROPIC_API_KEY"),
        ("claude", "/login"),
        ("codex", "codex login"),
        ("aider", "API key"),
        ("gemini", "GEMINI_API_KEY"),
        ("command", "agent.env"),
    ],
)
def test_auth_hint_names_the_fix(name: str, names_the_fix: str) -> None:
    assert names_the_fix in agents.auth_hint(name)

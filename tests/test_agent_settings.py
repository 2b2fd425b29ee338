"""Each milestone its own agent (issue 13): the `## Agent` section, Claude's flags passed through,
review.agent merged over agent, other presets' settings, the env scrub and permission denials.

The flag names are checked against the pinned CLIs' own `--help` (tests/test_agent_settings_claude.py
runs the real Claude CLI with them)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from bad_input import fingerprint
from conftest import Project

from orchestrator_lib import agents, denials, milestone_agent, presets
from orchestrator_lib.config import AgentConfig, Config, ConfigError, ReviewConfig, load_config, merge_agent
from orchestrator_lib.plan import parse_milestone

ROOT = Path("/work/repo")
MILESTONE = """# Design

## Tasks
- Design it.

## Agent
{settings}
"""


def argv_of(agent: AgentConfig, role: str = "implement", **env: str) -> tuple[str, ...]:
    return invocation(agent, role, **env).argv


def invocation(agent: AgentConfig, role: str = "implement", **env: str) -> agents.Invocation:
    return agents.build_invocation(
        agent,
        role=role,
        milestone_id="1A",
        worktree=ROOT / ".worktree" / "1A",
        prompt="Do 1A",
        prompt_file=ROOT / "p.md",
        base_env=env,
        extra_env={},
        resume_session=None,
        root=ROOT,
    )


def after(argv: tuple[str, ...], option: str, count: int = 1) -> tuple[str, ...]:
    start = argv.index(option) + 1
    return argv[start : start + count]


# --- Claude's flags -------------------------------------------------------------------------


def test_every_claude_setting_becomes_its_flag() -> None:
    agent = AgentConfig(
        model="claude-opus-4-5",
        fallback_model="claude-sonnet-4-5",
        effort="high",
        max_turns=40,
        budget_usd=2.5,
        permission_mode="acceptEdits",
        allowed_tools=("Read", "Bash(git log:*)"),
        disallowed_tools=("WebFetch",),
        append_system_prompt_file="prompts/style.md",
        settings=load_agent({"settings": {"sandbox": {"enabled": True}}}).settings,
        mcp_config="mcp.json",
    )
    argv = argv_of(agent)
    assert after(argv, "--model") == ("claude-opus-4-5",)
    assert after(argv, "--fallback-model") == ("claude-sonnet-4-5",)
    assert after(argv, "--effort") == ("high",)
    assert after(argv, "--max-turns") == ("40",)
    assert after(argv, "--max-budget-usd") == ("2.5",)
    assert after(argv, "--permission-mode") == ("acceptEdits",)
    assert "--dangerously-skip-permissions" not in argv
    assert after(argv, "--allowedTools", 2) == ("Read", "Bash(git log:*)")  # one argument each
    assert after(argv, "--disallowedTools", 2) == ("WebFetch", "--append-system-prompt-file")
    assert after(argv, "--append-system-prompt-file") == (str(ROOT / "prompts/style.md"),)
    assert json.loads(after(argv, "--settings")[0]) == {"sandbox": {"enabled": True}}
    assert after(argv, "--mcp-config") == (str(ROOT / "mcp.json"),)


def test_unset_settings_add_nothing_and_bypass_is_the_default() -> None:
    plain = argv_of(AgentConfig())
    assert argv_of(AgentConfig(permission_mode="bypassPermissions"))[:-1] == plain[:-1]  # all but the session id
    assert "--dangerously-skip-permissions" in plain and "--permission-mode" not in plain
    assert not {f.option for f in presets.CLAUDE_FLAGS} & set(plain)


def test_a_reviewer_keeps_its_refused_edit_tools_besides_the_configured_ones() -> None:
    argv = argv_of(AgentConfig(disallowed_tools=("WebFetch",)), role="review")
    assert argv.count("--disallowedTools") == 1
    assert after(argv, "--disallowedTools", 4) == ("WebFetch", "Edit", "Write", "NotebookEdit")


def _help(cli: str, *args: str) -> str:
    out = subprocess.run((cli, *args, "--help"), capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


# Accepted by the pinned CLI but not listed in its --help: tests/test_agent_settings_claude.py passes
# them to the real CLI, which refuses an unknown option ("error: unknown option").
CLAUDE_UNLISTED = {"--max-turns", "--append-system-prompt-file"}


def test_claude_flag_names_are_the_pinned_clis(claude_cli: str) -> None:
    text = _help(claude_cli)
    for flag in presets.CLAUDE_FLAGS:
        assert (f"{flag.option} " in text or f"{flag.option}," in text) != (flag.option in CLAUDE_UNLISTED), flag
    assert "--permission-mode <mode>" in text
    for mode in presets.get("claude").permission_modes:
        assert f'"{mode}"' in text, mode
    levels = ", ".join(presets.get("claude").effort_levels)
    assert f"({levels})" in " ".join(text.split())


def test_other_presets_flag_names_are_their_pinned_clis(codex_cli: str, gemini_cli: str, aider_cli: str) -> None:
    # The fixtures find the CLIs orchestrator.sh installs under .tools/ (or $CODEX_CLI …); under CI a
    # missing one fails the test instead of skipping it.
    for name, cli, args in (("codex", codex_cli, ("exec",)), ("gemini", gemini_cli, ()), ("aider", aider_cli, ())):
        text = _help(cli, *args)
        for flag in presets.get(name).flags:
            assert f"{flag.option} " in text or f"{flag.option}," in text or f"{flag.option}=" in text, (name, flag)


# --- other presets --------------------------------------------------------------------------


def test_codex_takes_model_and_effort_as_reasoning_effort() -> None:
    argv = argv_of(AgentConfig(preset="codex", model="gpt-5-codex", effort="high"))
    assert argv == (
        "codex",
        "exec",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--model",
        "gpt-5-codex",
        "-c",
        "model_reasoning_effort=high",
        "-",
    )


@pytest.mark.parametrize(
    ("agent", "key"),
    [
        ({"preset": "codex", "max_turns": 3}, "max_turns"),
        ({"preset": "aider", "effort": "high"}, "effort"),
        ({"preset": "gemini", "allowed_tools": ["Read"]}, "allowed_tools"),
        ({"preset": "codex", "permission_mode": "acceptEdits"}, "permission_mode"),
        ({"preset": "command", "command": ["x"], "model": "m"}, "model"),
    ],
)
def test_a_setting_the_preset_does_not_take_is_refused_naming_the_preset(
    tmp_path: Path, agent: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent(agent, tmp_path)
    assert f"`agent.{key}` is not a setting the {agent['preset']} preset takes" in str(caught.value)


def test_budget_is_taken_by_every_preset(tmp_path: Path) -> None:
    for name in ("codex", "aider", "gemini", "demo"):
        assert load_agent({"preset": name, "budget_usd": 1}, tmp_path).budget_usd == 1.0


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ({"permission_mode": "plan"}, "`agent.permission_mode` must be one of bypassPermissions, auto, acceptEdits"),
        ({"effort": "extreme"}, "`agent.effort` must be one of low, medium, high, xhigh, max for the claude preset"),
        ({"preset": "codex", "effort": "max"}, "`agent.effort` must be one of minimal, low, medium, high, xhigh"),
        ({"max_turns": 0}, "`agent.max_turns` must be at least 1"),
        ({"max_turns": 2.5}, "`agent.max_turns` must be a whole number"),
        ({"budget_usd": 0}, "`agent.budget_usd` must be at least 0.01"),
        ({"settings": "sandbox"}, "`agent.settings` must be a JSON object"),
        ({"append_system_prompt_file": "/etc/passwd"}, "`agent.append_system_prompt_file` must be relative"),
        ({"mcp_config": "../x.json"}, "`agent.mcp_config` must stay inside the repository"),
    ],
)
def test_bad_claude_settings_name_the_key(tmp_path: Path, agent: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_agent(agent, tmp_path)
    assert message in str(caught.value)


# --- merging ----------------------------------------------------------------------------------


def test_review_agent_merges_over_agent(tmp_path: Path) -> None:
    config = load(
        {
            "agent": {"model": "claude-sonnet-4-5", "env": {"A": "1"}, "max_turns": 9, "timeout_minutes": 7},
            "review": {"agent": {"model": "claude-opus-4-5"}},
        },
        tmp_path,
    )
    reviewer = config.review.agent
    assert reviewer is not None
    assert reviewer.model == "claude-opus-4-5"
    assert (dict(reviewer.env), reviewer.max_turns, reviewer.timeout_minutes) == ({"A": "1"}, 9, 7)


def test_another_preset_keeps_only_env_timeouts_and_budget() -> None:
    base = AgentConfig(model="claude-opus-4-5", effort="max", env={"A": "1"}, executable="/x/claude", budget_usd=3)
    codex = merge_agent(base, {"preset": "codex"})
    assert (codex.model, codex.effort, codex.executable) == (None, None, None)
    assert (dict(codex.env), codex.budget_usd) == ({"A": "1"}, 3)


# --- the `## Agent` section -----------------------------------------------------------------


def parse(settings: str, tmp_path: Path) -> Any:
    path = tmp_path / "milestones" / "1A.md"
    path.parent.mkdir(exist_ok=True)
    text = MILESTONE.format(settings=settings)
    path.write_text(text)
    milestone, problems = parse_milestone(path, text, "milestones/1A.md")
    return milestone, problems


def test_the_section_is_typed_and_merged_for_implement_and_remediate_only(tmp_path: Path) -> None:
    settings = (
        "- model: claude-opus-4-5\n- effort: high\n- budget_usd: 2.5\n- max_turns: 30\n"
        '- allowed_tools: Read, Bash(git log:*)\n- settings: {"sandbox": {"enabled": true}}\n- env: {"B": "2"}'
    )
    milestone, problems = parse(settings, tmp_path)
    assert problems == []
    config = Config(agent=AgentConfig(model="claude-haiku-4-5", env={"A": "1"}, timeout_minutes=5))
    assert milestone_agent.milestone_problems(milestone, config, tmp_path) == []
    agent = milestone_agent.for_role(config, milestone, "implement")
    assert (agent.model, agent.effort, agent.budget_usd, agent.max_turns) == ("claude-opus-4-5", "high", 2.5, 30)
    assert agent.allowed_tools == ("Read", "Bash(git log:*)")
    assert json.loads(agent.settings or "") == {"sandbox": {"enabled": True}}
    assert (dict(agent.env), agent.timeout_minutes) == ({"B": "2"}, 5)
    assert milestone_agent.for_role(config, milestone, "remediate") == agent
    # a review runs with the reviewer's settings, within the milestone's budget
    assert milestone_agent.for_role(config, milestone, "review") == dataclasses.replace(config.agent, budget_usd=2.5)
    assert milestone_agent.for_role(config, milestone, "resolve") == config.agent
    reviewer = Config(agent=config.agent, review=ReviewConfig(agent=AgentConfig(model="r")))
    assert milestone_agent.for_role(reviewer, milestone, "review") == AgentConfig(model="r", budget_usd=2.5)


@pytest.mark.parametrize(
    ("settings", "line", "message"),
    [
        ("- modle: x", 7, "unknown agent setting `modle` (did you mean `model`?)"),
        ("- model: a\n- budget_usd: lots", 8, "`budget_usd` must be a number"),
        ("- max_turns: 0", 7, "`max_turns` must be at least 1"),
        ("- effort: high\n- preset: aider", 7, "`effort` is not a setting the aider preset takes"),
        ("- permission_mode: plan", 7, "`permission_mode` must be one of bypassPermissions, auto, acceptEdits"),
        ("- append_system_prompt_file: missing.md", 7, "names missing.md, which is not a file in the repository"),
        ("- settings: [1]", 7, "`settings` must be a JSON object"),
    ],
)
def test_a_bad_setting_is_reported_at_its_line(tmp_path: Path, settings: str, line: int, message: str) -> None:
    milestone, problems = parse(settings, tmp_path)
    assert problems == []
    found = milestone_agent.milestone_problems(milestone, Config(), tmp_path)
    assert [(p.path, p.line) for p in found] == [("milestones/1A.md", line)], found
    assert message in found[0].message


def test_code_spans_null_and_flag_spellings(tmp_path: Path) -> None:
    milestone, _ = parse("- model: `claude-opus-4-5`\n- disallowed_tools: null\n- budget_usd: null", tmp_path)
    config = Config(agent=AgentConfig(disallowed_tools=("WebFetch",), budget_usd=3))
    agent = milestone_agent.for_role(config, milestone, "implement")
    assert (agent.model, agent.disallowed_tools, agent.budget_usd) == ("claude-opus-4-5", (), None)
    milestone, _ = parse("- max-turns: 5", tmp_path)
    (problem,) = milestone_agent.milestone_problems(milestone, config, tmp_path)
    assert "unknown agent setting `max-turns` (did you mean `max_turns`?)" in problem.message


def test_a_config_setting_the_milestone_preset_lacks_is_named_with_its_origin(tmp_path: Path) -> None:
    milestone, _ = parse("- preset: codex\n- model: gpt-5", tmp_path)
    config = Config(agent=AgentConfig(env={"A": "1"}, budget_usd=1))
    assert milestone_agent.milestone_problems(milestone, config, tmp_path) == []  # switched: starts afresh
    milestone, _ = parse("- max_turns: 3\n- preset: gemini", tmp_path)
    (problem,) = milestone_agent.milestone_problems(milestone, config, tmp_path)
    assert problem.line == 7 and "`max_turns` is not a setting the gemini preset takes" in problem.message


def test_items_that_are_not_settings_are_problems_with_their_line(tmp_path: Path) -> None:
    _, problems = parse("- model: a\n- model: b\n\nJust prose.\n\n- no colon here", tmp_path)
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (8, "`model` is set twice (first at line 7)"),
        (10, "'Just prose.' is not an agent setting"),
        (12, "'no colon here' is not an agent setting"),
    ]


# --- the whole command: validate, plan, status --------------------------------------------------


def test_validate_only_names_file_and_line_and_writes_nothing(project: Project) -> None:
    project.milestone("1A", extra="\n## Agent\n- model: claude-opus-4-5\n- max_turnz: 3\n")
    project.milestone("1B", extra="\n## Agent\n- effort: high\n")  # the command preset takes no effort
    project.commit_plan()
    before = fingerprint(project.root)
    for args in (("--validate-only",), ()):
        out = project.run(*args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "milestones/1A.md:8: unknown agent setting `max_turnz` (did you mean `max_turns`?)" in out.stderr
        assert "milestones/1B.md:7: `effort` is not a setting the command preset takes" in out.stderr
        assert fingerprint(project.root) == before


def test_plan_and_status_show_each_milestones_effective_agent(project: Project) -> None:
    project.milestone("1A", extra="\n## Agent\n- budget_usd: 2.5\n")
    project.milestone("1B")
    project.commit_plan()
    plan = project.run("plan")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert lines[lines.index(next(x for x in lines if x.strip().startswith("1A"))) + 1].split() == [
        "agent:",
        "command",
        "·",
        "budget",
        "$2.50",
    ]
    milestones = {m["id"]: m for m in project.status_json()["milestones"]}
    assert milestones["1A"]["agent"] == {"preset": "command", "model": None, "effort": None, "budget_usd": 2.5}
    assert milestones["1B"]["agent"]["budget_usd"] is None


# --- environment and refusals ---------------------------------------------------------------


def test_every_agent_run_scrubs_credentials_from_claudes_subprocesses_unless_agent_env_says(tmp_path: Path) -> None:
    bwrap = sandbox_tools(tmp_path / "bin", "bwrap", "socat")
    with_bwrap = {"PATH": str(bwrap.parent)}
    assert invocation(AgentConfig(), **with_bwrap).env[agents.SCRUB_ENV] == "1"
    assert invocation(AgentConfig(preset="codex"), **{agents.SCRUB_ENV: "0"}).env[agents.SCRUB_ENV] == "1"
    assert invocation(AgentConfig(env={agents.SCRUB_ENV: "0"}), **with_bwrap).env[agents.SCRUB_ENV] == "0"
    assert agents.scrub_warning(AgentConfig(), with_bwrap["PATH"]) is None


def test_with_the_scrub_on_claude_is_given_its_tools_explicitly(tmp_path: Path) -> None:
    # Claude Code 2.1.197 forces the permission mode back to "default" when the scrub is set; without
    # --allowedTools a headless agent then has every Write refused ("you haven't granted it yet").
    bwrap = sandbox_tools(tmp_path / "bin", "bwrap", "socat")
    scrubbed = invocation(AgentConfig(), PATH=str(bwrap.parent)).argv
    assert {"Write", "Edit", "Bash"} <= set(after_flag(scrubbed, "--allowedTools"))
    own = invocation(AgentConfig(allowed_tools=("Read",)), PATH=str(bwrap.parent)).argv
    assert after_flag(own, "--allowedTools") == ["Read"]  # the user's own list stands alone
    edits_only = invocation(AgentConfig(permission_mode="acceptEdits"), PATH=str(bwrap.parent)).argv
    assert "Write" in after_flag(edits_only, "--allowedTools") and "Bash" not in after_flag(
        edits_only, "--allowedTools"
    )
    opted_out = invocation(AgentConfig(env={agents.SCRUB_ENV: "0"}), PATH=str(bwrap.parent)).argv
    assert "--allowedTools" not in opted_out
    assert "--allowedTools" not in invocation(AgentConfig(), PATH=str(tmp_path)).argv  # no bwrap, no scrub


def sandbox_tools(folder: Path, *names: str) -> Path:
    """Stand-ins for the sandbox's programs on a PATH of their own; the last one made."""
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder / names[-1]


def after_flag(argv: Sequence[str], flag: str) -> list[str]:
    """The values after `flag`, up to the next option."""
    start = list(argv).index(flag) + 1
    values: list[str] = []
    for arg in argv[start:]:
        if arg.startswith("--"):
            break
        values.append(arg)
    return values


def test_claude_without_bubblewrap_runs_unscrubbed_and_says_so(tmp_path: Path) -> None:
    # Claude Code refuses to start with the scrub on and no bwrap: "bubblewrap is required …"
    empty = str(tmp_path)
    assert agents.SCRUB_ENV not in invocation(AgentConfig(), PATH=empty).env
    assert invocation(AgentConfig(preset="command", command=("x",)), PATH=empty).env[agents.SCRUB_ENV] == "1"
    assert "bubblewrap (`bwrap`) and `socat` are not installed" in (agents.scrub_warning(AgentConfig(), empty) or "")
    only_bwrap = sandbox_tools(tmp_path / "only", "bwrap")  # and every Bash call would fail without socat
    assert agents.SCRUB_ENV not in invocation(AgentConfig(), PATH=str(only_bwrap.parent)).env
    assert "`socat` is not installed" in (agents.scrub_warning(AgentConfig(), str(only_bwrap.parent)) or "")
    assert agents.scrub_warning(AgentConfig(env={agents.SCRUB_ENV: "0"}), empty) is None


def test_permission_denials_are_read_from_the_result() -> None:
    denied = [
        {"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "curl  http://x", "description": "d"}},
        {"tool_name": "Write", "tool_use_id": "t2", "tool_input": {"file_path": "/w/a.txt", "content": "x"}},
    ]
    result = {"type": "result", "subtype": "success", "permission_denials": denied}
    output = "\n".join(['{"type":"system"}', "not json", json.dumps(result)])
    assert denials.read(output) == ("Bash (curl http://x)", "Write (/w/a.txt)")
    assert denials.read(json.dumps({**result, "permission_denials": []})) == ()
    assert denials.read("plain text") == ()


# --- helpers --------------------------------------------------------------------------------


def load(data: dict[str, Any], tmp_path: Path) -> Config:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return load_config(path, {})


def load_agent(agent: dict[str, Any], tmp_path: Path | None = None) -> AgentConfig:
    import tempfile  # a scratch file where no tmp_path is at hand

    with tempfile.TemporaryDirectory() as scratch:
        return load({"agent": agent}, tmp_path or Path(scratch)).agent


def test_a_milestones_own_agent_must_be_installed_before_anything_starts(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B", extra="\n## Agent\n- preset: codex\n- executable: no-such-codex\n")
    project.commit_plan()
    before = fingerprint(project.root)
    out = project.run()
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the codex agent CLI `no-such-codex` is not installed" in out.stderr
    assert project.agent_calls() == [] and fingerprint(project.root) == before
    validated = project.run("--validate-only")
    assert validated.returncode == 0 and "warning: the codex agent CLI `no-such-codex`" in validated.stderr


def test_the_files_settings_name_must_be_in_the_repository(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside.md"
    outside.write_text("elsewhere\n")
    (project.root / "linked.md").symlink_to(outside)
    project.milestone("1A", extra="\n## Agent\n- preset: claude\n- append_system_prompt_file: linked.md\n")
    project.commit_plan()
    project.configure(agent={"preset": "claude", "command": None, "mcp_config": "nowhere.json"})
    out = project.run("--validate-only")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "milestones/1A.md:8: `append_system_prompt_file` leads to" in out.stderr
    config_file = project.root / "orchestrator.config.json"
    assert f"{config_file}: `agent.mcp_config` names nowhere.json, which is not a file in the repository" in out.stderr


def test_a_broken_config_gets_no_warning_about_an_agent_it_does_not_use(project: Project) -> None:
    # Its stand-in (the default claude agent) is no one's agent: only the config's own error is said.
    project.milestone("1A")
    project.commit_plan()
    project.configure(agent={"preset": "demo"}, schedule="graph")

    out = project.run("--validate-only", env={"PATH": os.path.dirname(os.path.realpath("/usr/bin/git"))})

    assert out.returncode == 2
    assert "`schedule` must be" in out.stderr
    assert "Claude Code needs" not in out.stderr


def test_every_problem_of_an_agent_section_is_named_at_once(project: Project) -> None:
    # A typo must not hide a bad value on the next line: the user fixes them in one go.
    project.milestone("1A", extra="\n## Agent\n- modle: x\n- budget_usd: -1\n- max_turns: lots\n")
    project.commit_plan()

    out = project.run("--validate-only")

    assert out.returncode == 2
    assert "milestones/1A.md:7: unknown agent setting `modle`" in out.stderr
    assert "milestones/1A.md:8: `budget_usd` must be at least" in out.stderr
    assert "milestones/1A.md:9: `max_turns`" in out.stderr

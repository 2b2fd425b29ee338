"""The agent presets: one record per agent the runner knows. Adding an agent is one entry here (with
the settings its CLI takes, `flags`) plus its argv (orchestrator_lib/agents.py), its error texts
(orchestrator_lib/agent_texts.py) and its tests.

PRESETS is the one literal list of their names; config, limits, agents and the pipeline read it
or the records below.
"""

from __future__ import annotations

from typing import NamedTuple

from orchestrator_lib import agent_texts
from orchestrator_lib.agent_texts import TextPattern

PRESETS = ("claude", "codex", "aider", "gemini", "command", "demo")


class Flag(NamedTuple):
    """How one agent setting (a key of config `agent` or of a milestone's `## Agent`) reaches a CLI."""

    key: str  # the AgentConfig field
    option: str
    value: str = "{}"  # the argument after the option, the value put in: "model_reasoning_effort={}"
    form: str = "value"  # "value": one argument; "values": one per item of a list; "path": the file's full path


# Claude Code's own flags (`claude --help`; --max-turns and --append-system-prompt-file are accepted
# but not listed there). tests/test_agent_settings.py checks them against the pinned CLI.
CLAUDE_FLAGS = (
    Flag("model", "--model"),
    Flag("fallback_model", "--fallback-model"),
    Flag("effort", "--effort"),
    Flag("max_turns", "--max-turns"),
    Flag("budget_usd", "--max-budget-usd"),
    Flag("allowed_tools", "--allowedTools", form="values"),
    Flag("disallowed_tools", "--disallowedTools", form="values"),
    Flag("append_system_prompt_file", "--append-system-prompt-file", form="path"),
    Flag("settings", "--settings"),
    Flag("mcp_config", "--mcp-config", form="path"),
)
# Settings every preset takes: the runner itself enforces a budget from the cost an agent reports.
RUNNER_KEYS = ("budget_usd",)


class Preset(NamedTuple):
    name: str
    executable: str | None = None  # its CLI's default name; None: given by agent.command or built in
    install_hint: str | None = None  # how a person installs the CLI
    auth_hint: str | None = None  # what a person does when it cannot authenticate; the run stops until then
    # Files it leaves in its worktree that are its own, not the milestone's work: kept out of git
    # through .git/info/exclude.
    own_files: tuple[str, ...] = ()
    resumes_session: bool = False  # a later run continues its own session (usage limit, transient error)
    # Its exit code does not say whether it worked (aider exits 0 when it gives up on rate limits,
    # captures/aider_429): a run that changed nothing in git did not succeed.
    judged_by_git: bool = False
    # What it prints when it stops for a reason (a custom command or the demo reads like Claude).
    error_texts: tuple[TextPattern, ...] = agent_texts.CLAUDE
    exit_meanings: tuple[tuple[int, str], ...] = ()  # exit codes that say why it stopped
    flags: tuple[Flag, ...] = ()  # the agent settings its CLI takes; any other one is refused at validation
    effort_levels: tuple[str, ...] = ()  # the values its `effort` takes
    permission_modes: tuple[str, ...] = ()  # the values its `permission_mode` takes (none: no such setting)

    def supports(self, key: str) -> bool:
        """Whether the agent setting `key` means something to this agent."""
        if key == "permission_mode":
            return bool(self.permission_modes)
        return key in RUNNER_KEYS or any(f.key == key for f in self.flags)


_RECORDS = (
    Preset(
        PRESETS[0],
        executable="claude",
        install_hint="npm install -g @anthropic-ai/claude-code",
        auth_hint="set a valid ANTHROPIC_API_KEY (in .env or agent.env), or log in again: run `claude` and "
        "type /login (for a subscription token: `claude setup-token`, then CLAUDE_CODE_OAUTH_TOKEN)",
        resumes_session=True,
        flags=CLAUDE_FLAGS,
        # bypassPermissions (the default) is --dangerously-skip-permissions: an unattended run has nobody
        # to ask. The others ask for some tools; headless, a question is a refusal (permission_denials).
        permission_modes=("bypassPermissions", "auto", "acceptEdits"),
        effort_levels=("low", "medium", "high", "xhigh", "max"),  # `claude --help`, --effort
    ),
    Preset(
        PRESETS[1],
        error_texts=agent_texts.CODEX,
        executable="codex",
        install_hint="npm install -g @openai/codex",
        auth_hint="run `codex login`, or set a valid OPENAI_API_KEY (in .env or agent.env)",
        resumes_session=True,
        # Codex has no effort flag: its config key model_reasoning_effort, set with -c, is it.
        flags=(Flag("model", "--model"), Flag("effort", "-c", "model_reasoning_effort={}")),
        effort_levels=("minimal", "low", "medium", "high", "xhigh"),
    ),
    Preset(
        PRESETS[2],
        error_texts=agent_texts.AIDER,
        executable="aider",
        install_hint="python -m pip install aider-install && aider-install",
        auth_hint="set a valid API key for aider's model provider (e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY in .env)",
        # its chat history and repo-map cache; it runs with --no-gitignore so the user's .gitignore stays untouched
        own_files=(".aider*",),
        judged_by_git=True,
        flags=(Flag("model", "--model"),),
    ),
    Preset(
        PRESETS[3],
        error_texts=agent_texts.GEMINI,
        exit_meanings=agent_texts.GEMINI_EXIT,
        executable="gemini",
        install_hint="npm install -g @google/gemini-cli",
        auth_hint="run `gemini` once to log in, or set a valid GEMINI_API_KEY (in .env or agent.env)",
        flags=(Flag("model", "--model"),),
    ),
    Preset(PRESETS[4]),  # agent.command: your own agent
    Preset(PRESETS[5]),  # the built-in offline agent (orchestrator_lib/demo_agent.py)
)
REGISTRY: dict[str, Preset] = {p.name: p for p in _RECORDS}
GENERIC_AUTH_HINT = "check the credentials your agent command uses (agent.env or .env)"


def get(name: str) -> Preset:
    """The record of a preset; an unknown name (config validation rejects those) has no hints."""
    return REGISTRY.get(name) or Preset(name)

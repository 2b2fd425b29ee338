"""A milestone's own agent: its `## Agent` settings, typed like the config's and merged over `agent`.

The items are read by orchestrator_lib/plan.py as written (`- model: claude-opus-4-5`); here each
value is typed by its config key (a number, a list, a JSON object …), checked with the config's own
rules, and every problem is reported with the milestone file and the line of the setting.
Implement and remediate runs use the merged agent; review runs use `review.agent` (itself merged
over `agent`) with the milestone's `budget_usd`, resolve and draft runs the config's `agent`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator_lib import config as configuration
from orchestrator_lib import pathkeys
from orchestrator_lib.config import AgentConfig, Config
from orchestrator_lib.plan import Milestone, Plan, Problem, Setting

KEYS = tuple(f.name for f in dataclasses.fields(AgentConfig))
_MILESTONE_ROLES = ("implement", "remediate")


def for_role(config: Config, milestone: Milestone, role: str) -> AgentConfig:
    """The agent that runs `role` for `milestone` (a plan that passed validation)."""
    changes = _typed(milestone.agent)[0] if milestone.agent else {}
    if role == "review":
        reviewer = config.review.agent or config.agent
        # The milestone's budget is the milestone's, whichever of its agents spends it.
        return dataclasses.replace(reviewer, budget_usd=changes["budget_usd"]) if "budget_usd" in changes else reviewer
    if role not in _MILESTONE_ROLES or not changes:
        return config.agent
    return configuration.merge_agent(config.agent, changes)


def plan_problems(
    plan: Plan, config: Config, root: Path, config_file: str = configuration.CONFIG_FILE
) -> list[Problem]:
    """Every problem of every milestone's `## Agent`, and of the files the agents' settings name."""
    problems = []
    for milestone in plan.milestones:
        problems += milestone_problems(milestone, config, root)
    for key, agent in (("agent", config.agent), ("review.agent", config.review.agent)):
        for name, message in _missing_files(agent, root):
            problems.append(Problem(config_file, 0, f"`{key}.{name}` {message}"))
    return problems


def milestone_problems(milestone: Milestone, config: Config, root: Path) -> list[Problem]:
    if not milestone.agent:
        return []
    shown = _display(milestone.path, root)
    changes, found = _typed(milestone.agent)
    lines = {s.key: s.line for s in milestone.agent}
    problems = [Problem(shown, line, message) for line, message in found]
    if "preset" in lines and "preset" not in changes and problems:
        return problems  # with the preset itself wrong, which settings it takes cannot be judged
    agent = configuration.merge_agent(config.agent, changes)
    for key, message in configuration.agent_problems(agent) + _missing_files(agent, root):
        where = "" if key in lines else f" (from the config's `agent.{key}`)"
        problems.append(Problem(shown, lines.get(key, min(lines.values())), f"`{key}`{where} {message}"))
    return problems


def _typed(settings: tuple[Setting, ...]) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """The settings typed as config values, and (line, problem) for each that is not one."""
    changes: dict[str, Any] = {}
    problems = []
    for s in settings:
        if s.key not in KEYS:
            problems.append((s.line, f"unknown agent setting `{s.key}`{_did_you_mean(s.key)}"))
            continue
        value, found = configuration.convert_agent_value(s.key, _from_text(s.key, s.value))
        problems += [(s.line, message) for message in found]
        if not found:
            changes[s.key] = value
    return changes, problems


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else f"; the settings are: {', '.join(KEYS)}"


def _from_text(key: str, text: str) -> Any:
    """What the text stands for, read by the key's type: `2.5`, `[Read, Bash]`, `{"a": 1}`, `null`."""
    hint = typing.get_type_hints(AgentConfig)[key]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if text == "null":  # unset: no value, an empty list or no variables
        return None if optional else {tuple: [], Mapping: {}}.get(typing.get_origin(inner) or inner, text)
    if inner is str or (inner is configuration.JsonObject and not text.startswith("{")):
        return _json(text) if text.startswith('"') else text
    if typing.get_origin(inner) is tuple and not text.startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    if inner is bool:
        return {"true": True, "false": False}.get(text.lower(), text)
    return _json(text)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # reported as the wrong type, quoted as written


def _missing_files(agent: AgentConfig | None, root: Path) -> list[tuple[str, str]]:
    """The path settings whose file is not in the repository (their form is checked with the config)."""
    if agent is None:
        return []
    missing = []
    for key in configuration.AGENT_PATH_KEYS:
        value = getattr(agent, key)
        if not value or _bad_form(value):
            continue
        elsewhere = pathkeys.location_problem(root, value)  # a symbolic link out of the repository
        if elsewhere or not (root / value).is_file():
            missing.append((key, elsewhere or f"names {value}, which is not a file in the repository {root}"))
    return missing


def _bad_form(value: str) -> bool:
    return pathkeys.value_problem(value) is not None


def summary(agent: AgentConfig) -> dict[str, Any]:
    """What `plan` and `status --json` show of a milestone's agent."""
    return {"preset": agent.preset, "model": agent.model, "effort": agent.effort, "budget_usd": agent.budget_usd}


def summaries(plan: Plan, config: Config) -> Mapping[str, dict[str, Any]]:
    return {m.id: summary(for_role(config, m, "implement")) for m in plan.milestones}


def describe(agent: AgentConfig) -> str:
    """One line for people: `claude · model claude-opus-4-5 · effort high · budget $2.50`."""
    parts = [agent.preset]
    parts += [f"model {agent.model}"] if agent.model else []
    parts += [f"effort {agent.effort}"] if agent.effort else []
    parts += [f"budget ${agent.budget_usd:.2f}"] if agent.budget_usd is not None else []
    return " · ".join(parts)


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()

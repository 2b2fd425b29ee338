"""Configuration: read once, validated eagerly, immutable.

Precedence: command-line flag > environment variable > config file > default.
Every key is documented in the README; unknown keys are errors that name the valid ones.
Every problem of a file is reported at once (ConfigError), so a config is fixed in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator_lib import pathkeys, presets
from orchestrator_lib.errors import UsageError
from orchestrator_lib.pathkeys import path_field
from orchestrator_lib.presets import PRESETS

CONFIG_FILE = "orchestrator.config.json"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    log_dir: str = path_field("logs")


# A JSON object in the config (Claude's `--settings`), kept as its compact JSON text: immutable, and
# exactly the argument the CLI gets.
JsonObject = typing.NewType("JsonObject", str)


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Config `agent`, `review.agent` and a milestone's `## Agent` (orchestrator_lib/milestone_agent.py)."""

    preset: str = "claude"
    command: tuple[str, ...] | None = None
    executable: str | None = None
    model: str | None = None
    permission_mode: str | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout_minutes: float = 120
    idle_timeout_minutes: float = 20
    # Claude Code's own flags; each preset's record (orchestrator_lib/presets.py) says which it takes.
    fallback_model: str | None = None
    effort: str | None = None
    max_turns: int | None = None
    budget_usd: float | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt_file: str | None = None  # a file in the repository
    settings: JsonObject | None = None
    mcp_config: str | None = None  # a file in the repository


# What a different preset inherits from the agent it is merged over: the rest (its executable, model,
# flags …) belongs to the agent it replaces. A Claude model name means nothing to Codex.
KEPT_ACROSS_PRESETS = ("env", "timeout_minutes", "idle_timeout_minutes", "budget_usd")
AGENT_PATH_KEYS = ("append_system_prompt_file", "mcp_config")


def merge_agent(base: AgentConfig, changes: Mapping[str, Any]) -> AgentConfig:
    """`changes` (keys of AgentConfig, values typed) over `base`, as review.agent and `## Agent` merge."""
    preset = changes.get("preset", base.preset)
    if preset != base.preset:
        base = AgentConfig(preset=preset, **{k: getattr(base, k) for k in KEPT_ACROSS_PRESETS})
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    grace_seconds: float = 2
    # A reset time read from text has minute precision (Claude rounds it down), so the
    # limit may lift up to a minute later than it says; exact epochs get no margin.
    text_reset_margin_seconds: float = 60
    backoff_initial_seconds: float = 10
    backoff_max_seconds: float = 600
    # Claude's usage warning (rate_limit_event allowed_warning) at or above this share of a
    # window holds new agent starts until the window resets; None: never hold.
    pause_at_utilization: float | None = 0.95


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
    """Spending caps in US dollars of what the agents report (orchestrator_lib/budget.py); None: no cap."""

    run_usd: float | None = None
    stage_usd: float | None = None
    milestone_usd: float | None = None


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    test_command: str | None = None
    lint_command: str | None = None
    timeout_minutes: float = 15
    max_file_kb: int = 1024  # 0: no limit
    enforce_scope: bool = True
    forbid_conflict_markers: bool = True
    forbid_secrets: bool = True


@dataclasses.dataclass(frozen=True)
class ReviewConfig:
    enabled: bool = True
    max_rounds: int = 3
    agent: AgentConfig | None = None


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    max_cpu_percent: float = 95
    max_memory_percent: float = 90
    min_free_disk_gb: float = 1
    max_wait_minutes: float = 30
    interval_seconds: float = 10


@dataclasses.dataclass(frozen=True)
class NotifyConfig:
    command: tuple[str, ...] | None = None
    desktop: bool = False


@dataclasses.dataclass(frozen=True)
class RecoveryConfig:
    max_attempts: int = 2


@dataclasses.dataclass(frozen=True)
class DraftConfig:
    max_rounds: int = 3  # `draft`: agent runs to reach a valid plan (the first, then one per fix)


@dataclasses.dataclass(frozen=True)
class WorktreeConfig:
    """How each new worktree is made ready to build and test (orchestrator_lib/worktree_prep.py)."""

    copy: tuple[str, ...] = ()  # git patterns of ignored files to copy (besides .worktreeinclude)
    link: tuple[str, ...] = ()  # folders of the main checkout to symlink, e.g. node_modules
    link_if_unchanged: tuple[str, ...] = ()  # lockfiles: link only while they match the main checkout's
    setup: tuple[tuple[str, ...], ...] = ()  # argv lists, run in order in each new worktree
    teardown: tuple[tuple[str, ...], ...] = ()  # argv lists, run before a worktree is removed
    timeout_minutes: float = 30  # for each setup or teardown command
    ports_per_task: int = 10
    port_range_start: int = 20000


EXECUTOR_KINDS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where milestones run: threads on this machine, or one Ray task each (orchestrator_lib/executor.py)."""

    kind: str = "local"
    address: str = "auto"  # "auto", "<host>:<port>" or "ray://<host>:<port>"
    remote: str | None = None  # a git URL the runner and every worker can fetch from and push to
    resources: Mapping[str, float] = dataclasses.field(default_factory=lambda: types.MappingProxyType({"CPU": 1.0}))
    work_dir: str | None = None  # on each worker; default: a folder under the worker's temp dir


@dataclasses.dataclass(frozen=True)
class Config:
    max_parallel_tasks: int = 4
    claude_rate_limit_wait: float = 300
    auto_resume: bool = True
    retry_attempts: int = 3
    milestones_dir: str = path_field("milestones")
    tasks_file: str = path_field("TASKS.md")
    worktree_dir: str = path_field(".worktree")
    base_branch: str | None = None
    keep_worktrees: bool = False
    schedule: str = "stages"  # or "dependencies" (orchestrator_lib/graph.py); --schedule overrides
    logging: LoggingConfig = LoggingConfig()
    agent: AgentConfig = AgentConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    validation: ValidationConfig = ValidationConfig()
    review: ReviewConfig = ReviewConfig()
    monitor: MonitorConfig = MonitorConfig()
    notify: NotifyConfig = NotifyConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    draft: DraftConfig = DraftConfig()
    worktree: WorktreeConfig = WorktreeConfig()
    executor: ExecutorConfig = ExecutorConfig()
    budget: BudgetConfig = BudgetConfig()


class ConfigError(UsageError):
    """Every problem of one config, each a line naming the file and the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# (minimum, maximum) of every number: NaN and ±Infinity are refused for all of them; a floor where a
# tiny value makes no sense (a sampling interval of 0 spins), a ceiling where a huge one overflows a
# timer (threading waits refuse more than about 292 years) or cannot be meant.
_DAY_MINUTES = 24 * 60
RANGES: dict[str, tuple[float, float]] = {
    "max_parallel_tasks": (1, 64),
    "claude_rate_limit_wait": (1, 7 * 24 * 3600),
    "retry_attempts": (0, 100),
    "rate_limit.grace_seconds": (0, 3600),
    "rate_limit.text_reset_margin_seconds": (0, 3600),
    "rate_limit.backoff_initial_seconds": (0.01, 24 * 3600),
    "rate_limit.backoff_max_seconds": (0.01, 24 * 3600),
    "validation.timeout_minutes": (0.01, 7 * _DAY_MINUTES),
    "validation.max_file_kb": (0, math.inf),
    "review.max_rounds": (1, 50),
    "monitor.max_cpu_percent": (1, 100),
    "monitor.max_memory_percent": (1, 100),
    "monitor.min_free_disk_gb": (0, math.inf),  # a huge floor is a way to hold every start
    "monitor.max_wait_minutes": (0, 7 * _DAY_MINUTES),
    "monitor.interval_seconds": (0.1, 3600),
    "recovery.max_attempts": (0, 50),
    "draft.max_rounds": (1, 50),
    "worktree.timeout_minutes": (0.01, 7 * _DAY_MINUTES),
    "worktree.ports_per_task": (1, 1000),
    "worktree.port_range_start": (1024, 65535),  # above 1023: no privileges needed
}
_AGENT_RANGES = {
    "timeout_minutes": (0.01, 7 * _DAY_MINUTES),
    "idle_timeout_minutes": (0.01, 7 * _DAY_MINUTES),
    "max_turns": (1, 100_000),
    "budget_usd": (0.01, 1_000_000),
}


def config_path(root: Path, flag: str | None, environ: Mapping[str, str]) -> Path:
    chosen = flag or environ.get("ORCHESTRATOR_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        return path if path.is_absolute() else Path.cwd() / path
    return root / CONFIG_FILE


def load_config(path: Path, environ: Mapping[str, str], explicit: bool = False) -> Config:
    """Read the file (missing is fine unless it was named explicitly), apply env overrides.

    Raises ConfigError listing every problem: unknown keys (with a did-you-mean), types, ranges, paths."""
    data: dict[str, Any] = {}
    if path.exists():
        data = _read_json(path)
    elif explicit:
        raise UsageError(f"config file not found: {path} (check --config / ORCHESTRATOR_CONFIG)")
    problems: list[str] = []
    data = _apply_env(data, environ, problems)
    config: Config = _merge_review_agent(_build(Config, data, "", _Context(path, problems)), data)
    problems += [f"{path}: {p}" for p in _value_problems(config)]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not valid UTF-8 (byte {e.start}): save the config as UTF-8") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except _DuplicateKeyError as e:
        raise UsageError(f"{path}: the key `{e}` is given twice: keep one") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply to be a config") from None
    except ValueError as e:  # a number with thousands of digits, say
        raise UsageError(f"{path}: invalid JSON: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a JSON object")
    return data


class _DuplicateKeyError(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently; the first may be the one the user meant
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen[key] = value
    return seen


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    data = dict(data)
    level = environ.get("LOG_LEVEL", "").strip()
    section = data.get("logging", {})
    if level and level.upper() not in LOG_LEVELS:
        problems.append(f"environment variable LOG_LEVEL={level!r}: expected one of {', '.join(LOG_LEVELS)}")
    elif level and isinstance(section, dict):  # not an object: reported as such below
        data["logging"] = {**section, "level": level.upper()}
    if environ.get("AUTO_RESUME"):
        try:
            data["auto_resume"] = parse_bool(environ["AUTO_RESUME"], "environment variable AUTO_RESUME")
        except UsageError as e:
            problems.append(str(e))
    return data


def parse_bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{name}={text!r}: expected true or false")


def _merge_review_agent(config: Config, data: Mapping[str, Any]) -> Config:
    """review.agent merges over agent: the keys it gives replace the agent's, the rest stays."""
    review = data.get("review")
    given = review.get("agent") if isinstance(review, dict) else None
    if config.review.agent is None or not isinstance(given, dict):
        return config
    names = {f.name for f in dataclasses.fields(AgentConfig)}
    changes = {key: getattr(config.review.agent, key) for key in given if key in names}
    merged = merge_agent(config.agent, changes)
    return dataclasses.replace(config, review=dataclasses.replace(config.review, agent=merged))


def convert_agent_value(key: str, value: Any) -> tuple[Any, list[str]]:
    """One agent setting from JSON-like `value`, typed as in the config: (value, problems without a source)."""
    problems: list[str] = []
    converted = _convert(typing.get_type_hints(AgentConfig)[key], value, key, _Context(None, problems))
    return converted, problems


class _Context(typing.NamedTuple):
    source: Path | None
    problems: list[str]

    def add(self, message: str) -> None:
        self.problems.append(f"{self.source}: {message}" if self.source else message)


def _build(cls: type[Any], data: Any, prefix: str, ctx: _Context) -> Any:
    """The dataclass from `data`; a bad value is reported and its default stands in."""
    if not isinstance(data, dict):
        ctx.add(f"`{prefix.rstrip('.')}` must be an object, not {_shown(data)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(data) - set(fields)):
        shown = f"{prefix}{name}".encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate prints
        ctx.add(f"unknown config key `{shown}`{_did_you_mean(name, prefix, fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name in fields.keys() & data.keys():
        value = _convert(hints[name], data[name], f"{prefix}{name}", ctx)
        if value is not _BAD:
            values[name] = value
    return cls(**values)


def _did_you_mean(name: str, prefix: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
    if close:
        return f" (did you mean `{prefix}{close[0]}`?)"
    elsewhere = [k for k in _all_keys(Config) if k.rsplit(".", 1)[-1] == name and k != f"{prefix}{name}"]
    if elsewhere:
        return f" (did you mean `{elsewhere[0]}`?)"
    return f"; valid keys here: {', '.join(fields)}"


def _all_keys(cls: type[Any], prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        keys.append(f"{prefix}{f.name}")
        inner = typing.get_type_hints(cls)[f.name]
        inner = next((a for a in typing.get_args(inner) if dataclasses.is_dataclass(a)), inner)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            keys += _all_keys(inner, f"{prefix}{f.name}.")
    return keys


_BAD: Any = object()  # a value that was reported; the field keeps its default


def _convert(hint: Any, value: Any, key: str, ctx: _Context) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, ctx)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, f"{key}.", ctx)
    if hint is JsonObject:
        return _json_object(value, key, ctx)
    if origin is tuple and args and typing.get_origin(args[0]) is tuple:
        return _argv_lists(value, key, ctx)
    expected = _expected(hint, origin, value)
    if expected:
        ctx.add(f"`{key}` must be {expected}, not {_shown(value)}")
        return _BAD
    if origin is tuple:
        return tuple(value)
    if args[1:] == (float,):
        return types.MappingProxyType({k: float(v) for k, v in value.items()})
    if origin in (Mapping, dict) or hint is Mapping:
        return types.MappingProxyType(dict(value))
    return float(value) if hint is float else value


def _expected(hint: Any, origin: Any, value: Any) -> str | None:
    """What `value` should have been, or None when it fits `hint`."""
    args = typing.get_args(hint)
    if origin is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) and _clean_text(v) for v in value)
        return None if ok else "a list of strings (without NUL characters)"
    if args[1:] == (float,):  # resource amounts: {"CPU": 1, "agent_slot": 1}
        ok = isinstance(value, dict) and all(_amount(k, v) for k, v in value.items())
        return None if ok else "an object of resource names and numbers of at least 0"
    if origin in (Mapping, dict) or hint is Mapping:
        ok = isinstance(value, dict) and all(_env_pair(k, v) for k, v in value.items())
        return None if ok else "an object of string values (names without = or NUL characters)"
    if hint in (float, int):
        if isinstance(value, bool) or not isinstance(value, (int, float) if hint is float else int):
            return "a number" if hint is float else "a whole number"
        return None if math.isfinite(value) else "a finite number (NaN and Infinity are not numbers here)"
    if hint is str and isinstance(value, str):
        return None if _clean_text(value) else "text without NUL characters or lone surrogates"
    if isinstance(value, hint):
        return None
    return {bool: "true or false", str: "a string"}.get(hint, str(hint))


def _json_object(value: Any, key: str, ctx: _Context) -> Any:
    try:
        if isinstance(value, dict):
            return JsonObject(json.dumps(value, separators=(",", ":"), allow_nan=False))
    except ValueError:  # NaN or Infinity inside
        pass
    ctx.add(f'`{key}` must be a JSON object, e.g. {{"sandbox": {{"enabled": true}}}}, not {_shown(value)}')
    return _BAD


def _clean_text(text: str) -> bool:
    """Text a path, an argv or an environment can carry: no NUL, valid UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _argv_lists(value: Any, key: str, ctx: _Context) -> Any:
    """Commands as argv lists, never a shell string: [["npm", "ci"], ["npm", "run", "build"]]."""
    example = '[["npm", "ci"]] (for a shell line: [["sh", "-c", "…"]])'
    if not isinstance(value, list):
        ctx.add(f"`{key}` must be a list of argv lists, e.g. {example}, not {_shown(value)}")
        return _BAD
    bad = [n for n, argv in enumerate(value) if not _is_argv(argv)]
    for n in bad:
        ctx.add(f"`{key}[{n}]` must be an argv list of non-empty strings, e.g. {example}, not {_shown(value[n])}")
    return _BAD if bad else tuple(tuple(argv) for argv in value)


def _is_argv(argv: Any) -> bool:
    return isinstance(argv, list) and bool(argv) and all(isinstance(a, str) and a and _clean_text(a) for a in argv)


def _amount(name: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return bool(name) and _clean_text(name) and number and math.isfinite(value) and value >= 0


def _env_pair(name: str, value: Any) -> bool:
    return isinstance(value, str) and name != "" and "=" not in name and _clean_text(name + value)


def _shown(value: Any) -> str:
    text = json.dumps(value, allow_nan=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_problems(config: Config) -> list[str]:
    """Ranges, choices and paths of a config whose types are right."""
    problems = [
        *_range_problems(config),
        *_path_problems(config),
        *_agent_problems(config),
        *_budget_problems(config),
        *[f"`{key}` must be {expected}" for key, ok, expected in _other_checks(config) if not ok],
    ]
    return problems


def _range_problems(config: Config) -> list[str]:
    found = [(key, _get(config, key), *bounds) for key, bounds in RANGES.items()]
    return [f"`{key}` {_out_of_range(value, low, high)}" for key, value, low, high in found if not low <= value <= high]


def _out_of_range(value: float, low: float, high: float) -> str:
    bound = f"at least {low:g}" if value < low else f"at most {high:g}"
    allowed = f"from {low:g} to {high:g}" if math.isfinite(high) else f"{low:g} or more"
    return f"must be {bound} ({allowed}), not {_shown(value)}"


def _get(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _path_problems(config: Config) -> list[str]:
    keys = list(pathkeys.path_keys(config))
    problems = [
        f"`{key}` {problem} (it is {_shown(value)})"
        for key, value in keys
        if (problem := pathkeys.value_problem(value))
    ]
    problems += [f"`{key}` {message}" for key, message in pathkeys.overlap_problems(keys)]
    return problems


def _agent_problems(config: Config) -> list[str]:
    problems = []
    for agent_key, agent in (("agent", config.agent), ("review.agent", config.review.agent)):
        if agent is not None:
            problems += [f"`{agent_key}.{key}` {message}" for key, message in agent_problems(agent)]
    return problems


def _budget_problems(config: Config) -> list[str]:
    """Caps are positive amounts; the utilization share is more than 0 and at most 1 (null: off)."""
    caps = [(f"budget.{k}", getattr(config.budget, k)) for k in ("run_usd", "stage_usd", "milestone_usd")]
    problems = [
        f"`{key}` must be more than 0 (US dollars), or null for no cap, not {_shown(v)}"
        for key, v in caps
        if v is not None and v <= 0
    ]
    share = config.rate_limit.pause_at_utilization
    if share is not None and not 0 < share <= 1:
        problems.append(
            f"`rate_limit.pause_at_utilization` must be more than 0 and at most 1 (0.95 holds new starts at 95 %), "
            f"or null to never hold, not {_shown(share)}"
        )
    return problems


def agent_problems(agent: AgentConfig) -> list[tuple[str, str]]:
    """(key, what is wrong) for each setting of a typed agent: ranges, choices, and settings its preset lacks."""
    if agent.preset not in PRESETS:
        return [("preset", f"must be one of {', '.join(PRESETS)}, not {_shown(agent.preset)}")]
    record = presets.get(agent.preset)
    problems = []
    if agent.preset == "command" and not agent.command:
        problems.append(("command", 'must be set when preset is "command", e.g. ["python3", "my_agent.py"]'))
    for key, (low, high) in _AGENT_RANGES.items():
        value = getattr(agent, key)
        if value is not None and not low <= value <= high:
            problems.append((key, _out_of_range(value, low, high)))
    problems += [(key, _path_problem(getattr(agent, key))) for key in AGENT_PATH_KEYS if getattr(agent, key)]
    for key, choices in (("effort", record.effort_levels), ("permission_mode", record.permission_modes)):
        value = getattr(agent, key)
        if value is not None and choices and value not in choices:
            problems.append(
                (key, f"must be one of {', '.join(choices)} for the {agent.preset} preset, not {_shown(value)}")
            )
    problems += [
        (key, _unsupported(agent.preset)) for key in _flag_keys() if getattr(agent, key) and not record.supports(key)
    ]
    return [(key, message) for key, message in problems if message]


def _flag_keys() -> list[str]:
    """The agent settings only some presets take."""
    universal = {"preset", "command", "executable", "extra_args", "env", "timeout_minutes", "idle_timeout_minutes"}
    return [f.name for f in dataclasses.fields(AgentConfig) if f.name not in universal]


def _unsupported(preset: str) -> str:
    taken = [key for key in _flag_keys() if presets.get(preset).supports(key)]
    return f"is not a setting the {preset} preset takes (it takes {', '.join(taken)}): remove it or set it to null"


def _path_problem(value: str) -> str:
    problem = pathkeys.value_problem(value)
    return f"{problem} (it is {_shown(value)})" if problem else ""


def _other_checks(config: Config) -> list[tuple[str, bool, str]]:
    return [
        ("logging.level", config.logging.level.upper() in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
        ("schedule", config.schedule in ("stages", "dependencies"), '"stages" or "dependencies"'),
        ("notify.command", config.notify.command != (), 'a non-empty argv list, e.g. ["notify.sh"], or null'),
        (
            "worktree.port_range_start",
            config.worktree.port_range_start + config.worktree.ports_per_task - 1 <= 65535,
            "low enough for a whole block of worktree.ports_per_task ports below 65536",
        ),
        *_executor_checks(config.executor),
        (
            "rate_limit.backoff_max_seconds",
            config.rate_limit.backoff_max_seconds >= config.rate_limit.backoff_initial_seconds,
            "at least rate_limit.backoff_initial_seconds",
        ),
    ]


def _executor_checks(e: ExecutorConfig) -> list[tuple[str, bool, str]]:
    ray = e.kind == "ray"
    return [
        ("executor.kind", e.kind in EXECUTOR_KINDS, 'one of "local" (this machine) or "ray" (a Ray cluster)'),
        (
            "executor.remote",
            not ray or bool(e.remote and e.remote.strip()),
            'set when executor.kind is "ray": a git URL (file://, ssh or https) the runner and every worker '
            "can fetch from and push to",
        ),
        (
            "executor.address",
            not ray or _ray_address(e.address),
            '"auto", "<host>:<port>" or "ray://<host>:<port>"',
        ),
    ]


def _ray_address(address: str) -> bool:
    if address == "auto":
        return True
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def to_data(config: Any) -> Any:
    """The config as plain JSON data that `from_data` reads back (a Ray worker rebuilds it so)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_data(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_data(v) for k, v in config.items()}
    if isinstance(config, tuple):
        return [to_data(v) for v in config]
    return config


def from_data(data: dict[str, Any], source: Path) -> Config:
    problems: list[str] = []
    config: Config = _build(Config, data, "", _Context(source, problems))
    if problems:
        raise ConfigError(problems)
    return config


def replace(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **changes)


def environ() -> Mapping[str, str]:
    return os.environ

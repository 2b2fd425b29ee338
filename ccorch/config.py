"""Configuration: read once, validated eagerly, immutable.

Precedence: command-line flag > environment variable > config file > default.
Every key is documented in the README; unknown keys are errors that name the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ccorch.errors import UsageError

CONFIG_FILE = "orchestrator.config.json"
PRESETS = ("claude", "codex", "aider", "gemini", "command", "demo")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    log_dir: str = "logs"


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    preset: str = "claude"
    command: tuple[str, ...] | None = None
    executable: str | None = None
    model: str | None = None
    permission_mode: str | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout_minutes: float = 120
    idle_timeout_minutes: float = 20


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    grace_seconds: float = 2
    # A reset time read from text has minute precision (Claude rounds it down), so the
    # limit may lift up to a minute later than it says; exact epochs get no margin.
    text_reset_margin_seconds: float = 60
    backoff_initial_seconds: float = 10
    backoff_max_seconds: float = 600


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
class Config:
    max_parallel_tasks: int = 4
    claude_rate_limit_wait: float = 300
    auto_resume: bool = True
    retry_attempts: int = 3
    milestones_dir: str = "milestones"
    tasks_file: str = "TASKS.md"
    worktree_dir: str = ".worktree"
    base_branch: str | None = None
    keep_worktrees: bool = False
    logging: LoggingConfig = LoggingConfig()
    agent: AgentConfig = AgentConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    validation: ValidationConfig = ValidationConfig()
    review: ReviewConfig = ReviewConfig()
    monitor: MonitorConfig = MonitorConfig()
    notify: NotifyConfig = NotifyConfig()
    recovery: RecoveryConfig = RecoveryConfig()


def config_path(root: Path, flag: str | None, environ: Mapping[str, str]) -> Path:
    chosen = flag or environ.get("ORCHESTRATOR_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        return path if path.is_absolute() else Path.cwd() / path
    return root / CONFIG_FILE


def load_config(path: Path, environ: Mapping[str, str], explicit: bool = False) -> Config:
    """Read the file (missing is fine unless it was named explicitly), apply env overrides."""
    data: dict[str, Any] = {}
    if path.exists():
        data = _read_json(path)
    elif explicit:
        raise UsageError(f"config file not found: {path} (check --config / ORCHESTRATOR_CONFIG)")
    data = _apply_env(data, environ, path)
    config: Config = _build(Config, data, prefix="", source=path)
    _check_values(config, path)
    return config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except OSError as e:
        raise UsageError(f"cannot read config {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not valid UTF-8 (byte {e.start}): save the file as UTF-8") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a JSON object")
    return data


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], path: Path) -> dict[str, Any]:
    data = dict(data)
    section = data.get("logging", {})
    if environ.get("LOG_LEVEL") and isinstance(section, dict):  # not an object: reported as such below
        data["logging"] = {**section, "level": environ["LOG_LEVEL"].upper()}
    if environ.get("AUTO_RESUME"):
        data["auto_resume"] = parse_bool(environ["AUTO_RESUME"], "AUTO_RESUME")
    return data


def parse_bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{name}={text!r}: expected true or false")


def _build(cls: type[Any], data: Any, prefix: str, source: Path) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"{source}: `{prefix.rstrip('.')}` must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(f"{source}: unknown config key `{prefix}{unknown[0]}`; valid keys here: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], value, f"{prefix}{name}", source) for name, value in data.items()}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, source: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, source)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, f"{key}.", source)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _type_error(key, "a list of strings", value, source)
        return tuple(value)
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _type_error(key, "an object of string values", value, source)
        return types.MappingProxyType(dict(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, "a number", value, source)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, "a whole number", value, source)
        return value
    if not isinstance(value, hint):
        raise _type_error(key, {bool: "true or false", str: "a string"}.get(hint, str(hint)), value, source)
    return value


def _type_error(key: str, expected: str, value: Any, source: Path) -> UsageError:
    return UsageError(f"{source}: `{key}` must be {expected}, not {json.dumps(value)}")


def _check_values(config: Config, source: Path) -> None:
    problems = [
        ("max_parallel_tasks", config.max_parallel_tasks >= 1, "at least 1"),
        ("retry_attempts", config.retry_attempts >= 0, "0 or more"),
        ("claude_rate_limit_wait", config.claude_rate_limit_wait > 0, "more than 0 seconds"),
        ("rate_limit.grace_seconds", config.rate_limit.grace_seconds >= 0, "0 or more"),
        ("rate_limit.text_reset_margin_seconds", config.rate_limit.text_reset_margin_seconds >= 0, "0 or more"),
        ("logging.level", config.logging.level.upper() in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
        ("review.max_rounds", config.review.max_rounds >= 1, "at least 1"),
        ("validation.max_file_kb", config.validation.max_file_kb >= 0, "0 (no limit) or more"),
        ("recovery.max_attempts", config.recovery.max_attempts >= 0, "0 or more"),
        *_monitor_problems(config.monitor),
        ("notify.command", config.notify.command != (), 'a non-empty argv list, e.g. ["notify.sh"], or null'),
    ]
    for agent_key, agent in (("agent", config.agent), ("review.agent", config.review.agent)):
        if agent is None:
            continue
        problems += [
            (f"{agent_key}.preset", agent.preset in PRESETS, f"one of {', '.join(PRESETS)}"),
            (
                f"{agent_key}.command",
                agent.preset != "command" or bool(agent.command),
                'set when preset is "command", e.g. ["python3", "my_agent.py"]',
            ),
            (f"{agent_key}.timeout_minutes", agent.timeout_minutes > 0, "more than 0"),
            (f"{agent_key}.idle_timeout_minutes", agent.idle_timeout_minutes > 0, "more than 0"),
        ]
    for key, ok, expected in problems:
        if not ok:
            raise UsageError(f"{source}: `{key}` must be {expected}")


def _monitor_problems(m: MonitorConfig) -> list[tuple[str, bool, str]]:
    return [
        ("monitor.max_cpu_percent", 0 < m.max_cpu_percent <= 100, "more than 0 and at most 100"),
        ("monitor.max_memory_percent", 0 < m.max_memory_percent <= 100, "more than 0 and at most 100"),
        ("monitor.min_free_disk_gb", m.min_free_disk_gb >= 0, "0 or more"),
        ("monitor.max_wait_minutes", m.max_wait_minutes >= 0, "0 or more (fractions are fine)"),
        ("monitor.interval_seconds", m.interval_seconds > 0, "more than 0 seconds"),
    ]


def replace(config: Config, **changes: Any) -> Config:
    return dataclasses.replace(config, **changes)


def environ() -> Mapping[str, str]:
    return os.environ

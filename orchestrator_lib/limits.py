"""Read an agent's output: did it finish, hit a usage limit (and when does it lift), or fail?

Pure functions of (preset, exit code, output text, now); no clock, no I/O. The texts
below are quoted from the real CLIs: the captures of Claude Code 2.1.197, Codex CLI
0.169.0 and Aider 0.86.2 in the project's shared captures, plus the sources and
issues cited next to each pattern.

Rules that keep false alarms out:
- In Claude's json/stream-json output only the result text, synthetic assistant
  messages (``"model": "<synthetic>"``, the CLI's own error notes), error events and
  non-JSON lines (stderr) are read; what the model wrote or a tool returned never is.
- Plain-text patterns are anchored at the start of a line (after bullets, box
  drawing and ``Error:`` labels) or are exact phrasings, and only the last lines count.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator_lib import agent_texts
from orchestrator_lib.agent_texts import Kind, TextPattern
from orchestrator_lib.presets import PRESETS, REGISTRY, get


class Classification(NamedTuple):
    kind: Kind
    reset_at: float | None  # epoch seconds when a usage limit lifts, if known
    message: str  # one human line: the limit text / error text found (<= 300 chars)
    # reset_at came as an epoch (Claude's resetsAt, "…|1750708800"), not as a clock time
    # in a text, which has minute precision at best.
    reset_exact: bool = False


class AgentReport(NamedTuple):
    session_id: str | None
    cost_usd: float | None
    input_tokens: int | None
    output_tokens: int | None
    num_turns: int | None
    result_text: str | None
    is_error: bool | None
    api_error_status: int | None


_NO_REPORT = AgentReport(None, None, None, None, None, None, None, None)

# Plain-text agents print their whole session; a limit is reported at the end.
_TAIL_LINES = 50
_MESSAGE_CHARS = 300
_LAST_LINE_CHARS = 200
# Claude floors the reset time it prints to the minute (the capture's resetsAt
# 07:37:53 reads "resets 7:37am"), so a time of day a little in the past means the
# limit has just lifted, not that it lifts tomorrow.
_JUST_PASSED = timedelta(hours=1)
# https://ai.google.dev/gemini-api/docs/rate-limits: "Requests per day (RPD) quotas
# reset at midnight Pacific time." Used when Gemini says "daily" and no time.
_PACIFIC = "America/Los_Angeles"


class _Hit(NamedTuple):
    kind: Kind
    position: int  # in the scanned lines
    line: str


_RANK: dict[Kind, int] = {"usage_limit": 0, "auth": 1, "context": 2, "transient": 3}


def _ranked(*groups: tuple[TextPattern, ...]) -> tuple[TextPattern, ...]:
    """One line matching two kinds takes the stronger (a limit beats a 429)."""
    return tuple(sorted((p for group in groups for p in group), key=lambda p: _RANK[p.kind]))


_PATTERNS: dict[str, tuple[TextPattern, ...]] = {
    name: _ranked(preset.error_texts, agent_texts.GENERIC) for name, preset in REGISTRY.items()
}

# Bullets, box drawing, emoji, "✕ [" and the like before the message itself.
_LEAD = re.compile(r"^[^\w{]+")
_LABEL = re.compile(r"^(?:(?:API Error|ERROR|Error|error|stream error|Fatal error|message\"?)\s*:\s*\"?)+")
# Aider prints "Retrying in 2.0 seconds..." and Codex "…; retrying 1/5 in 200ms":
# an error that was retried is not why the run ended.
_RETRYING = re.compile(r"\bretrying\b", re.IGNORECASE)
# Gemini phrases that mean "until the daily quota resets" without saying when.
_DAILY = re.compile(r"daily quota|per day|PerDay|reset within 24h", re.IGNORECASE)

# What ends the prompt Codex echoes: its next section header or a diagnostic.
_CODEX_SECTION = re.compile(r"^(?:(?:codex|thinking|tokens used)$|exec\b|(?:ERROR|warning):)")

# ---------------------------------------------------------------- reading output


def json_object(text: str) -> dict[str, Any] | None:
    """One line of an agent's JSON output as an object, or None (the one parser of such lines)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _items(output: str) -> list[dict[str, Any] | str]:
    """The output as JSON events and plain lines, in order."""
    stripped = output.strip()
    if stripped.startswith("{") and "\n" in stripped:
        whole = json_object(stripped)  # Gemini --output-format json is pretty-printed
        if whole is not None:
            return [whole]
    items: list[dict[str, Any] | str] = []
    for raw in output.splitlines():
        line = raw.strip()
        if line:
            event = json_object(line) if line.startswith("{") else None
            items.append(line if event is None else event)
    return items


def _lines_of(value: Any) -> list[str]:
    return [s.strip() for s in value.splitlines() if s.strip()] if isinstance(value, str) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_blocks(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return _lines_of(content)
    blocks = content if isinstance(content, list) else []
    return [ln for b in blocks if _dict(b).get("type") == "text" for ln in _lines_of(b.get("text"))]


def _result_texts(event: dict[str, Any]) -> list[str]:
    lines = _lines_of(event.get("result"))
    # A success-shaped result is also what the model said last: read it only when
    # it is one line, the shape every CLI-written limit text has.
    if event.get("is_error") is not True and len(lines) > 1:
        lines = []
    errors = event.get("errors")  # error_during_execution lists what went wrong
    if isinstance(errors, list):
        lines += [ln for error in errors for ln in _lines_of(error)]
    return lines


def _error_texts(event: dict[str, Any]) -> list[str]:
    """Messages the CLI itself wrote: Claude's result/synthetic notes, error events."""
    kind = event.get("type")
    if kind == "result":
        return _result_texts(event)
    if kind == "assistant":
        message = _dict(event.get("message"))
        return _text_blocks(message) if message.get("model") == "<synthetic>" else []
    if kind == "error" and isinstance(event.get("message"), str):
        return _lines_of(event["message"])  # codex exec --json
    if kind in ("error", "turn.failed") or (kind is None and "error" in event):
        return _lines_of(_dict(event.get("error")).get("message"))  # codex, gemini json
    return []


def _without_codex_prompt(lines: list[str]) -> list[str]:
    """Codex echoes the prompt after a "user" line; a milestone text is not an error."""
    kept: list[str] = []
    in_prompt = False
    for line in lines:
        if line == "user":
            in_prompt = True
        elif in_prompt and _CODEX_SECTION.match(line):
            in_prompt = False
        if not in_prompt:
            kept.append(line)
    return kept


def _scanned_lines(preset: str, items: list[dict[str, Any] | str]) -> list[str]:
    lines: list[str] = []
    for item in items:
        lines.extend([item] if isinstance(item, str) else _error_texts(item))
    if preset == "codex":
        lines = _without_codex_prompt(lines)
    return lines[-_TAIL_LINES:]


def _clean(line: str) -> str:
    return _LABEL.sub("", _LEAD.sub("", line))


def _scan(patterns: tuple[TextPattern, ...], lines: list[str]) -> _Hit | None:
    """The strongest kind found, newest line first; retried transient errors don't count."""
    best: _Hit | None = None
    retried = False
    for index in range(len(lines) - 1, -1, -1):
        line = _clean(lines[index])
        retried = retried or bool(_RETRYING.search(line))
        for pattern in patterns:
            if pattern.regex.search(line) and not (pattern.kind == "transient" and retried):
                if best is None or _RANK[pattern.kind] < _RANK[best.kind]:
                    best = _Hit(pattern.kind, index, lines[index])
                break
    return best


def _shorten(text: str, limit: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "\u2026"


# ---------------------------------------------------------------- reset times

_EPOCH = re.compile(r"\|\s*(\d{9,11})\b")
_RELATIVE = re.compile(
    r"\b(?:try again|retry|resets?|wait)\s+(?:in|after)\s+(?:about\s+)?"
    r"(?P<span>less than a minute|(?:\d+(?:\.\d+)?\s*[a-z]+[\s,]*(?:and\s+)?)+)",
    re.IGNORECASE,
)
_UNIT = re.compile(
    r"(\d+(?:\.\d+)?)\s*(ms|d(?:ays?)?|h(?:ours?|rs?)?|m(?:in(?:ute)?s?)?|s(?:ec(?:ond)?s?)?)(?![a-z])",
    re.IGNORECASE,
)
_SECONDS = {"ms": 0.001, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_KEY = re.compile(r"\b(?:resets?|try again|regain access)(?:\s+(?:at|on))?\s+", re.IGNORECASE)
_MONTHS = [
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
]
_WHEN = re.compile(
    rf"(?:(?P<mon>(?i:{'|'.join(_MONTHS)}))[a-z]*\.?\s+"
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{4}))?(?:\s*,\s*|\s+at\s+|\s+|\b))?"
    r"(?:(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>(?i:[ap]\.?m\b\.?))?)?"
    r"\s*(?:\((?P<paren>[^)]+)\)|(?P<gmt>UTC|GMT|Z)(?P<offset>[+-]\d{1,2}(?::?\d{2})?)?\b"
    r"|(?P<abbr>[A-Z]{3,4})\b)?"
)
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})(?:T|\s+at\s+|\s+)(?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::\d{2})?\s*(?P<gmt>UTC|GMT|Z)?"
)
_US_ZONES = {
    "PST": -8,
    "PDT": -7,
    "MST": -7,
    "MDT": -6,
    "CST": -6,
    "CDT": -5,
    "EST": -5,
    "EDT": -4,
    "AKST": -9,
    "AKDT": -8,
    "HST": -10,
}


def _local_zone(now: datetime) -> tzinfo:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: its zone is the local time of reset texts")
    return now.tzinfo


def _named_zone(name: str, now: datetime) -> tzinfo:
    """An IANA zone, legacy aliases included (Asia/Calcutta); unknown means local."""
    name = name.strip()
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return _local_zone(now)


def _offset_zone(offset: str | None) -> tzinfo:
    """GMT-3, GMT+5:30 as Node prints them (Gemini's "Access resets at 10:57 PM GMT-3")."""
    if not offset:
        return UTC
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    hours, minutes = (digits, "0") if len(digits) <= 2 else (digits[:-2], digits[-2:])
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


def _zone_of(match: re.Match[str], now: datetime) -> tzinfo:
    if match["paren"]:
        return _named_zone(match["paren"], now)
    if match["gmt"]:
        return _offset_zone(match["offset"])
    if match["abbr"] in _US_ZONES:
        return timezone(timedelta(hours=_US_ZONES[match["abbr"]]))
    return _local_zone(now)


def _clock(match: re.Match[str]) -> tuple[int, int] | None:
    """Hour and minute, or None when the digits are not a time ("resets 2" is not)."""
    if match["hour"] is None or (match["minute"] is None and match["ampm"] is None):
        return None
    hour, minute = int(match["hour"]), int(match["minute"] or 0)
    if match["ampm"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match["ampm"].lower().startswith("p") else 0)
    return (hour, minute) if hour < 24 and minute < 60 else None


def _next_time_of_day(clock: tuple[int, int], zone: tzinfo, now: datetime) -> float:
    local_now = now.astimezone(zone)
    at = datetime.combine(local_now.date(), time(*clock), tzinfo=zone)
    if at < local_now - _JUST_PASSED:
        at = datetime.combine(local_now.date() + timedelta(days=1), time(*clock), tzinfo=zone)
    return at.timestamp()


def _on_date(match: re.Match[str], clock: tuple[int, int], zone: tzinfo, now: datetime) -> float | None:
    """Month and day; without a year, this year unless that is over a day ago."""
    local_now = now.astimezone(zone)
    month = _MONTHS.index(match["mon"][:3].lower()) + 1
    year = int(match["year"] or local_now.year)
    try:
        at = datetime(year, month, int(match["day"]), *clock, tzinfo=zone)
        if match["year"] is None and at < local_now - timedelta(days=1):
            at = at.replace(year=year + 1)
    except ValueError:  # Feb 30, or Feb 29 moved to a common year
        return None
    return at.timestamp()


def _absolute(text: str, now: datetime) -> float | None:
    for key in _KEY.finditer(text):
        iso = _ISO.match(text, key.end())
        if iso:
            zone = UTC if iso["gmt"] else _local_zone(now)
            at = datetime.fromisoformat(f"{iso['date']}T{iso['hour']}:{iso['minute']}")
            return at.replace(tzinfo=zone).timestamp()
        when = _WHEN.match(text, key.end())
        if when is None:
            continue
        clock = _clock(when)
        if when["mon"]:
            found = _on_date(when, clock or (0, 0), _zone_of(when, now), now)
            if found is not None:
                return found
        elif clock:
            return _next_time_of_day(clock, _zone_of(when, now), now)
    return None


def _relative(text: str, now: datetime) -> float | None:
    match = _RELATIVE.search(text)
    if match is None:
        return None
    span = match["span"]
    if span.lower() == "less than a minute":
        return now.timestamp() + 60
    units = [(float(n), u.lower()) for n, u in _UNIT.findall(span)]
    if not units:
        return None
    seconds = sum(n * _SECONDS["ms" if u == "ms" else u[0]] for n, u in units)
    return now.timestamp() + seconds


def parse_reset(text: str, now: datetime) -> float | None:
    """When a limit text says the limit lifts, as epoch seconds; None if it doesn't say.

    `now` must be timezone-aware: its zone is the local time of texts without one.
    A bare time of day is its next occurrence (one that passed within the last hour
    counts as just lifted); a month and day without a year is this year, or next
    year if that is more than a day ago.
    """
    epoch = _EPOCH.search(text)  # "Claude AI usage limit reached|1750708800"
    if epoch:
        return float(epoch[1])
    return _relative(text, now) or _absolute(text, now)


def _next_pacific_midnight(now: datetime) -> float:
    zone = ZoneInfo(_PACIFIC)
    day = now.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=zone).timestamp()


def _usage_reset(lines: list[str], index: int, now: datetime) -> float | None:
    # Codex and Gemini may put "try again at …" / "Access resets at …" on the next line.
    window = " ".join(lines[index : index + 3])
    found = parse_reset(window, now)
    if found is None and _DAILY.search(lines[index]):
        return _next_pacific_midnight(now)
    return found


# ---------------------------------------------------------------- classification


def _rejected_limit(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Claude stream-json's rate_limit_event saying a subscriber limit refused the call."""
    for event in reversed(events):
        info = _dict(event.get("rate_limit_info"))
        if event.get("type") == "rate_limit_event" and info.get("status") == "rejected":
            # With overage on, Claude carries on using extra usage: not a stop.
            return None if info.get("isUsingOverage") is True else info
    return None


class UsageWarning(NamedTuple):
    """Claude's rate_limit_event with status allowed_warning: an account window nearly used up."""

    utilization: float  # 0 to 1
    window: str  # rateLimitType: five_hour, seven_day, …
    resets_at: float | None  # epoch seconds


def usage_warning(line: str) -> UsageWarning | None:
    """The warning one stream-json line carries, if it is one (a plain "allowed" is not)."""
    if '"rate_limit_event"' not in line:
        return None
    event = json_object(line.strip())
    info = _dict(event.get("rate_limit_info")) if event and event.get("type") == "rate_limit_event" else {}
    utilization = _float(info.get("utilization"))
    if info.get("status") != "allowed_warning" or utilization is None:
        return None
    window = info.get("rateLimitType")
    return UsageWarning(utilization, window if isinstance(window, str) else "", _epoch(info.get("resetsAt")))


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value / 1000 if value > 1e12 else float(value)  # tolerate milliseconds


def _from_limit_event(info: dict[str, Any], hit: _Hit | None, lines: list[str], now: datetime) -> Classification:
    text_hit = hit if hit is not None and hit.kind == "usage_limit" else None
    reset = _epoch(info.get("resetsAt"))
    window = info.get("rateLimitType") or "unknown window"
    message = _shorten(text_hit.line if text_hit else f"usage limit reached ({window})", _MESSAGE_CHARS)
    if reset is not None:
        return Classification("usage_limit", reset, message, reset_exact=True)
    if text_hit is not None:
        return _from_hit(text_hit, lines, now)
    return Classification("usage_limit", None, message)


def _from_hit(hit: _Hit, lines: list[str], now: datetime) -> Classification:
    reset = _usage_reset(lines, hit.position, now) if hit.kind == "usage_limit" else None
    exact = reset is not None and _EPOCH.search(hit.line) is not None
    return Classification(hit.kind, reset, _shorten(hit.line, _MESSAGE_CHARS), exact)


def _last_result(items: list[dict[str, Any] | str]) -> dict[str, Any] | None:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("type") == "result":
            return item
    return None


def _from_result(result: dict[str, Any]) -> Classification | None:
    """Claude's result when no text said more; `subtype` says "success" even on errors."""
    text = result.get("result") if isinstance(result.get("result"), str) else ""
    subtype = result.get("subtype")
    if isinstance(subtype, str) and subtype.startswith("error"):
        # error_max_turns, error_during_execution, error_max_budget_usd: the agent failed.
        message = f"{subtype}: {text}" if text else subtype
        return Classification("failed", None, _shorten(message, _MESSAGE_CHARS))
    status = result.get("api_error_status")
    message = _shorten(text or f"API error {status}", _MESSAGE_CHARS)
    if status in (401, 403):
        return Classification("auth", None, message)
    if status in (408, 429) or (isinstance(status, int) and status >= 500):
        return Classification("transient", None, message)
    if result.get("is_error") is True:
        return Classification("failed", None, message)
    return None


def _from_exit(preset: str, returncode: int, output: str) -> Classification:
    line = last_line(output)
    if returncode == 0:
        return Classification("ok", None, line)
    what = dict(get(preset).exit_meanings).get(returncode)
    if what == "auth":
        return Classification("auth", None, line or "gemini: authentication failed (exit 41)")
    detail = f"{what} (exit {returncode})" if what else f"exit code {returncode}"
    message = f"{detail}: {line}" if line and what else line or detail
    return Classification("failed", None, _shorten(message, _MESSAGE_CHARS))


def classify(preset: str, returncode: int | None, output: str, now: datetime) -> Classification:
    """What an agent run's exit code and output (stdout and stderr) mean for the runner.

    returncode None means the watchdog killed the process: transient, unless the
    output shows a usage limit or an auth problem.
    """
    if preset not in _PATTERNS:
        raise ValueError(f"unknown agent preset {preset!r}; valid: {', '.join(PRESETS)}")
    items = _items(output)
    lines = _scanned_lines(preset, items)
    hit = _scan(_PATTERNS[preset], lines)
    limit = _rejected_limit([i for i in items if isinstance(i, dict)])
    if limit is not None:
        found: Classification | None = _from_limit_event(limit, hit, lines, now)
    else:
        found = _from_hit(hit, lines, now) if hit else None
    if returncode is None:
        if found is not None and found.kind in ("usage_limit", "auth"):
            return found
        return Classification("transient", None, "killed by watchdog")
    if found is not None:
        return found
    result = _last_result(items)
    from_result = _from_result(result) if result is not None else None
    return from_result or _from_exit(preset, returncode, output)


# ---------------------------------------------------------------- reports


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _input_tokens(usage: dict[str, Any]) -> int | None:
    # Cached prompt tokens are still prompt tokens: count what the model read.
    fresh = _int(usage.get("input_tokens"))
    if fresh is None:
        return None
    cached = ("cache_creation_input_tokens", "cache_read_input_tokens")
    return fresh + sum(_int(usage.get(k)) or 0 for k in cached)


def read_report(output: str) -> AgentReport:
    """Facts from the last Claude result object (--output-format json or stream-json), or from
    Codex's `exec --json` events (thread.started, turn.completed)."""
    items = _items(output)
    result = _last_result(items)
    if result is None:
        return _codex_report([i for i in items if isinstance(i, dict)]) or _aider_report(output)
    usage = _dict(result.get("usage"))
    is_error = result.get("is_error")
    return AgentReport(
        session_id=_str(result.get("session_id")),
        cost_usd=_float(result.get("total_cost_usd")),
        input_tokens=_input_tokens(usage),
        output_tokens=_int(usage.get("output_tokens")),
        num_turns=_int(result.get("num_turns")),
        result_text=_str(result.get("result")),
        is_error=is_error if isinstance(is_error, bool) else None,
        api_error_status=_int(result.get("api_error_status")),
    )


# Aider after each answer, when it knows the model's price (aider/coders/base_coder.py):
# "Tokens: 1.0k sent, 15 received. Cost: $1.04 message, $1.04 session."
_AIDER_USAGE = re.compile(
    r"^Tokens: (?P<sent>[\d.]+[kM]?) sent(?:, [\d.]+[kM]? cache \w+)*, (?P<received>[\d.]+[kM]?) received\."
    r"(?: Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.)?",
    re.MULTILINE,
)


def _aider_count(text: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return round(float(text.rstrip("kM")) * scale)


def _aider_report(output: str) -> AgentReport:
    """Aider's usage lines: tokens per answer (rounded as it prints them), cost for the session."""
    usages = list(_AIDER_USAGE.finditer(output))
    if not usages:
        return _NO_REPORT
    sessions = [float(u["session"]) for u in usages if u["session"]]
    return _NO_REPORT._replace(
        cost_usd=sessions[-1] if sessions else None,
        input_tokens=sum(_aider_count(u["sent"]) for u in usages),
        output_tokens=sum(_aider_count(u["received"]) for u in usages),
    )


def _codex_report(events: list[dict[str, Any]]) -> AgentReport | None:
    """Codex names its session in thread.started and counts tokens per turn in turn.completed;
    its input_tokens already include the cached ones. Codex reports no cost."""
    thread = next((e.get("thread_id") for e in events if e.get("type") == "thread.started"), None)
    usages = [_dict(e.get("usage")) for e in events if e.get("type") == "turn.completed"]
    if thread is None and not usages:
        return None
    turns = [e for e in events if e.get("type") in ("turn.completed", "turn.failed")]
    failed = next((e for e in reversed(turns) if e.get("type") == "turn.failed"), None)
    return AgentReport(
        session_id=_str(thread),
        cost_usd=None,
        input_tokens=sum(_int(u.get("input_tokens")) or 0 for u in usages) if usages else None,
        output_tokens=sum(_int(u.get("output_tokens")) or 0 for u in usages) if usages else None,
        num_turns=len(turns) or None,
        result_text=None,
        is_error=None if not turns else failed is not None,
        api_error_status=None,
    )


def _readable(event: dict[str, Any]) -> list[str]:
    kind = event.get("type")
    if kind == "result":
        return _lines_of(event.get("result"))
    if kind == "assistant":
        return _text_blocks(_dict(event.get("message")))
    if kind == "message" and event.get("role") == "assistant":
        return _lines_of(event.get("content"))  # gemini stream-json
    item = _dict(event.get("item"))
    if kind == "item.completed" and item.get("type") == "agent_message":
        return _lines_of(item.get("text"))  # codex exec --json
    return _error_texts(event) if kind in ("error", "turn.failed") else []


def last_line(output: str) -> str:
    """The last line a person would want to read: for stream-json the last assistant
    or result text, otherwise the last non-empty line; at most 200 characters."""
    for item in reversed(_items(output)):
        lines = [item] if isinstance(item, str) else _readable(item)
        if lines:
            return _shorten(lines[-1], _LAST_LINE_CHARS)
    return ""

"""A reviewer's verdict: where it is read from, and the record each review round leaves.

Sources, first found wins: the JSON file at ORCHESTRATOR_REVIEW_FILE; Claude's structured
output (`--json-schema`, the `structured_output` of its result); the last line of what the
agent said (Claude's result, Codex's last message, else the plain output), `VERDICT: PASS` or
`VERDICT: FAIL`, with `- ` findings above it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator_lib import files, redact

NO_VERDICT = "reviewer gave no verdict"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
        "findings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["verdict", "findings"],
}
_FINDINGS_LOOKBACK = 40


class Review(NamedTuple):
    passed: bool
    findings: tuple[str, ...]
    source: str  # "review file", "structured output", "last line", or "" when there was none


def read_verdict(review_file: Path, output: str) -> Review | None:
    """The verdict, or None when the reviewer gave none. `output` is the agent's output or final text."""
    result = _result_event(output)
    said = str(result.get("result", "")) if result else _codex_message(output) or output
    return (
        _from_file(review_file)
        or _from_object(result.get("structured_output") if result else _json(output), "structured output")
        or _from_last_line(said)
    )


def _from_file(path: Path) -> Review | None:
    try:
        return _from_object(_json(path.read_text(encoding="utf-8")), "review file")
    except OSError:
        return None


def _from_object(data: Any, source: str) -> Review | None:
    if not isinstance(data, dict):
        return None
    verdict = str(data.get("verdict", "")).strip().lower()
    findings = data.get("findings", [])
    if verdict not in ("pass", "fail") or not isinstance(findings, list):
        return None
    return Review(verdict == "pass", tuple(str(f) for f in findings), source)


def _from_last_line(text: str) -> Review | None:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[-1].strip().upper() not in ("VERDICT: PASS", "VERDICT: FAIL"):
        return None
    above = [line.strip() for line in lines[:-1][-_FINDINGS_LOOKBACK:]]
    findings = tuple(line[1:].strip() for line in above if line[:1] in ("-", "*") and line[1:2] == " ")
    return Review(lines[-1].strip().upper().endswith("PASS"), findings, "last line")


def _result_event(output: str) -> dict[str, Any] | None:
    """Claude's last `result` event (stream-json or json output), if there is one."""
    for line in reversed(output.splitlines()):
        event = _json(line) if line.startswith("{") else None
        if isinstance(event, dict) and event.get("type") == "result":
            return event
    return None


def _codex_message(output: str) -> str | None:
    """The last thing Codex said (`codex exec --json`: an agent_message item), if any."""
    for line in reversed(output.splitlines()):
        event = _json(line) if line.startswith("{") else None
        item = event.get("item") if isinstance(event, dict) and event.get("type") == "item.completed" else None
        if isinstance(item, dict) and item.get("type") == "agent_message":
            return str(item.get("text", ""))
    return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def log_path(log_dir: Path, milestone_id: str, round_no: int) -> Path:
    return log_dir / "reviews" / f"{milestone_id}-{round_no}.md"


def write_log(path: Path, milestone_id: str, round_no: int, review: Review, discarded: Sequence[str]) -> None:
    """logs/reviews/<ID>-<round>.md: the verdict, where it came from, the findings."""
    how = f" (from the {review.source})" if review.source else ""
    lines = [f"# Review of {milestone_id}, round {round_no}: {'PASS' if review.passed else 'FAIL'}{how}", ""]
    lines += [f"- {f}" for f in review.findings] or ["(no findings)"]
    if discarded:
        lines += ["", f"The reviewer changed {', '.join(discarded)}; those changes were discarded."]
    with files.open_private(path, "w") as f:
        f.write(redact.active().mask("\n".join(lines) + "\n"))

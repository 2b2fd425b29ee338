"""Readable one-liners from an agent's output (Claude stream-json, Codex exec --json or plain text)."""

from __future__ import annotations

import json
from typing import Any


def readable(line: str) -> str | None:
    """One readable line for a raw output line, or None for lines not worth showing."""
    text = line.strip()
    if not text:
        return None
    if not text.startswith("{"):
        return text
    try:
        event = json.loads(text)
    except ValueError:
        return text
    return _event(event) if isinstance(event, dict) else None


def _event(event: dict[str, Any]) -> str | None:
    kind = event.get("type")
    if kind == "assistant":
        return _blocks(event.get("message", {}).get("content", []), "")
    if kind == "user":
        return _blocks(event.get("message", {}).get("content", []), "  ↳ ")
    if kind == "result":
        cost = event.get("total_cost_usd")
        status = "error" if event.get("is_error") else "done"
        tail = f" · ${cost:.4f}" if isinstance(cost, (int, float)) else ""
        return f"[{status}] {str(event.get('result', ''))[:300]}{tail}"
    if kind == "rate_limit_event":
        info = event.get("rate_limit_info", {})
        return (
            f"[rate limit] {info.get('status')} {info.get('rateLimitType', '')} resets at {info.get('resetsAt', '?')}"
        )
    if kind == "system" and event.get("subtype") == "api_retry":
        return f"[api retry {event.get('attempt')}/{event.get('max_retries')}] status {event.get('error_status')}"
    if kind == "system" and event.get("subtype") == "init":
        return f"[session {event.get('session_id', '?')}] model {event.get('model', '?')}"
    return _codex_event(event)


def _codex_event(event: dict[str, Any]) -> str | None:
    """`codex exec --json`: thread.started, item.completed, turn.completed / turn.failed, error."""
    kind, item = event.get("type"), event.get("item")
    if kind == "thread.started":
        return f"[session {event.get('thread_id', '?')}]"
    if kind == "item.completed" and isinstance(item, dict):
        if item.get("type") == "agent_message":
            return _blocks(str(item.get("text", "")), "")
        if item.get("type") == "command_execution":
            output = _result(item.get("aggregated_output"))
            return f"→ shell(command={str(item.get('command', ''))[:120]}) exit {item.get('exit_code')}; {output}"
        if item.get("type") == "error":
            return f"[warning] {str(item.get('message', ''))[:300]}"
    if kind == "turn.completed":
        usage: dict[str, Any] = event["usage"] if isinstance(event.get("usage"), dict) else {}
        return f"[done] {usage.get('input_tokens', '?')} in / {usage.get('output_tokens', '?')} out tokens"
    if kind in ("error", "turn.failed"):
        error: dict[str, Any] = event["error"] if isinstance(event.get("error"), dict) else event
        return f"[error] {str(error.get('message', ''))[:300]}"
    return None


def _blocks(content: Any, prefix: str) -> str | None:
    if isinstance(content, str):
        return prefix + content.strip().splitlines()[0][:300] if content.strip() else None
    parts = []
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "text" and block.get("text", "").strip():
            parts.append(block["text"].strip().replace("\n", " ")[:300])
        elif block.get("type") == "tool_use":
            parts.append(f"→ {block.get('name')}({_args(block.get('input', {}))})")
        elif block.get("type") == "tool_result":
            parts.append(_result(block.get("content")))
    return prefix + " ".join(parts) if parts else None


def _args(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    for key in ("file_path", "command", "pattern", "path", "url"):
        if key in data:
            return f"{key}={str(data[key])[:120]}"
    return ", ".join(sorted(data))[:120]


def _result(content: Any) -> str:
    if isinstance(content, list):
        content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    text = str(content or "").strip().replace("\n", " ")
    return f"result: {text[:160]}" if text else "result: (empty)"

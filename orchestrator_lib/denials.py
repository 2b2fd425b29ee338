"""What an agent was refused: Claude's `permission_denials`, read from its result event.

An unattended run has nobody to answer a permission prompt; with `permission_mode` `auto` or
`acceptEdits`, or tools in `disallowed_tools`, Claude refuses the tool call and lists it in its
result (`{"tool_name": "Bash", "tool_input": {"command": "curl …"}}`). The runner shows each one
in the milestone's log, in `status` and in its failure reason, so a run says what it was refused.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator_lib import limits

_SHOWN_CHARS = 120


def read(output: str) -> tuple[str, ...]:
    """The refusals of the last result event in `output`, each as `Bash (curl http://…)`."""
    for line in reversed(output.splitlines()):
        event = limits.json_object(line) if line.startswith("{") else None
        if event is not None and event.get("type") == "result":
            found = event.get("permission_denials")
            return tuple(_shown(d) for d in found if isinstance(d, dict)) if isinstance(found, list) else ()
    return ()


def _shown(denial: dict[str, Any]) -> str:
    tool = str(denial.get("tool_name") or "a tool")
    tool_input = denial.get("tool_input")
    what = ""
    if isinstance(tool_input, dict):
        # the command or the file says what was refused; the rest of the input is detail
        what = str(tool_input.get("command") or tool_input.get("file_path") or tool_input.get("url") or "")
        what = what or json.dumps(tool_input)
    what = " ".join(what.split())
    what = what if len(what) <= _SHOWN_CHARS else what[: _SHOWN_CHARS - 1] + "…"
    return f"{tool} ({what})" if what else tool


def summary(refused: tuple[str, ...]) -> str:
    """One line for a failure reason and the log."""
    return "refused by the agent's permissions: " + "; ".join(refused)


def in_reason(reason: str, refused: tuple[str, ...]) -> str:
    """A failure's reason with what the agent was refused, often why it could not do the work."""
    return f"{reason}\n{summary(refused)}" if refused else reason

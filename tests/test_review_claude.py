"""Review and remediation with the real Claude Code CLI, talking to the fake Messages API.

One fake model plays every role of one milestone, telling them apart by the prompt the
runner gave: the implementer writes a wrong greeting, the reviewer fails it once (structured
output), the remediator (the implementer's session, resumed) fixes it, the reviewer passes it.
Skipped locally without the CLI; failed in CI (see claude_cli).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import fake_anthropic as fa
from conftest import Project
from fake_anthropic import FakeAnthropic, RecordedRequest
from user_edits import UserEdits

FINDING = "greet() returns 'hi' — the Tasks ask for \"Hello, world!\""
ROLE_OPENERS = {
    "implement": "You are implementing milestone 1A",
    "review": "You are reviewing the work done for milestone 1A",
    "remediate": "You are fixing milestone 1A",
}


def texts(request: RecordedRequest) -> str:
    """Every text the model is shown in this request, unescaped."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key in ("text", "content"):
                walk(node.get(key))

    walk(request.messages)
    return "\n".join(out)


def role_of(request: RecordedRequest) -> str:
    """The role whose prompt came last in the conversation (a resumed session holds earlier ones)."""
    shown = texts(request)
    positions = {role: shown.rfind(opener) for role, opener in ROLE_OPENERS.items()}
    role = max(positions, key=lambda r: positions[r])
    return role if positions[role] >= 0 else "unknown"


def after_tool_result(request: RecordedRequest) -> bool:
    users = [m for m in request.messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


class FakeModel:
    """Answers by role; thread-safe, since the server handles requests in threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.review_sessions: list[str] = []
        self.seen: list[tuple[str, RecordedRequest]] = []

    def __call__(self, request: RecordedRequest) -> fa.Item:
        role = role_of(request)
        with self.lock:
            self.seen.append((role, request))
        if after_tool_result(request):
            return fa.text("Done.")
        if role == "implement":
            return fa.write("greet.py", "def greet():\n    return 'hi'\n")
        if role == "remediate":
            return fa.write("greet.py", "def greet():\n    return 'Hello, world!'\n")
        if role == "review":
            return self._review(request)
        return fa.text("Done.")

    def _review(self, request: RecordedRequest) -> fa.Item:
        session = request.headers.get("x-claude-code-session-id", "")
        with self.lock:
            if session not in self.review_sessions:
                self.review_sessions.append(session)
            first = self.review_sessions.index(session) == 0
        if first:  # the third verdict source: structured output (--json-schema)
            return fa.tool_use("StructuredOutput", {"verdict": "fail", "findings": [FINDING]})
        return fa.text("Checked greet.py against the Tasks.\nVERDICT: PASS")  # the last-line source

    def requests(self, role: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for seen_role, r in self.seen if seen_role == role]


def tool_names(request: RecordedRequest) -> set[str]:
    return {t["name"] for t in request.body["tools"]}


def test_claude_implements_reviews_and_remediates_one_milestone(
    project: Project, fake_anthropic: FakeAnthropic, claude_cli: str, tmp_path: Path
) -> None:
    project.milestone(
        "1A",
        "Greeting",
        tasks='- Write `greet.py` whose greet() returns "Hello, world!".',
        exit_checks=["greet.py exists (`test -f greet.py`)"],
    )
    project.commit_plan()
    edits = UserEdits(project.root)
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")
    claude = {"preset": "claude", "executable": claude_cli, "env": env, "timeout_minutes": 1, "idle_timeout_minutes": 1}
    project.configure(agent=claude)
    model = FakeModel()
    fake_anthropic.add_script([fa.respond(model)] * 100)

    out = project.run(timeout=120)

    assert out.returncode == 0, out.stdout + out.stderr
    assert project.show("greet.py") == "def greet():\n    return 'Hello, world!'\n"
    assert project.trailers() == ["1A"]
    assert len(model.review_sessions) == 2
    implement, remediate, review = model.requests("implement"), model.requests("remediate"), model.requests("review")
    assert implement and remediate and review
    assert {"Write", "Edit"} <= tool_names(implement[0])
    for request in review:  # the reviewer is never offered an edit tool, and is offered structured output
        assert not {"Edit", "Write", "NotebookEdit"} & tool_names(request)
        assert "StructuredOutput" in tool_names(request)
    first_fix = texts(remediate[0])
    assert f"- {FINDING}\n" in first_fix
    assert ROLE_OPENERS["implement"] in first_fix  # the implementer's session, resumed
    reviews = project.root / "logs" / "reviews"
    assert "FAIL (from the structured output)" in (reviews / "1A-1.md").read_text()
    assert FINDING in (reviews / "1A-1.md").read_text()
    assert "PASS (from the last line)" in (reviews / "1A-2.md").read_text()
    record = next(m for m in project.status_json()["milestones"] if m["id"] == "1A")
    assert (record["status"], record["review_rounds"], record["last_findings"]) == ("merged", 2, [])
    edits.assert_intact()

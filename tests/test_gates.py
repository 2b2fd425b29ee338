"""Quality gates after every agent run: scope, file size, conflict markers, secrets from .env.

Each gate rejects the change, the remediation gets its message, and each can be switched off.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from conftest import Project
from user_edits import UserEdits

from advanced import has_conflict_markers

SECRET = "sk-test-fake-0123456789abcdef"
MARKED = "<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> milestone/1B\n"


class Gate(NamedTuple):
    check: str  # the gate's name in the check summary
    bad: dict[str, Any]  # the implementer's change, which the gate rejects
    fix: dict[str, Any]  # the remediation
    off: dict[str, Any]  # validation config that switches the gate off
    path: str  # the file the bad change writes
    tasks: str = "- Do the work."
    config: dict[str, Any] = {}  # noqa: RUF012 - a NamedTuple default, never mutated
    purged: bool = False  # the rejected content must not stay in any branch's history


GATES = {
    "scope": Gate(
        "change is in the milestone's scope",
        bad={"write": {"elsewhere.txt": "x\n"}},
        fix={"write": {"src/app.py": "print('hi')\n"}},
        off={"enforce_scope": False},
        path="elsewhere.txt",
        tasks="- Write `src/app.py`.",
    ),
    "size": Gate(
        "file size limit",
        bad={"write": {"big.txt": "x" * 3000}},
        fix={"delete": ["big.txt"], "write": {"small.txt": "small\n"}},
        off={"max_file_kb": 0},
        path="big.txt",
        config={"max_file_kb": 2},
        purged=True,
    ),
    "markers": Gate(
        "no conflict markers",
        bad={"write": {"merged.txt": MARKED}},
        fix={"write": {"merged.txt": "ours\ntheirs\n"}},
        off={"forbid_conflict_markers": False},
        path="merged.txt",
    ),
    "secrets": Gate(
        "no secrets in the change",
        bad={"write": {"settings.txt": f"token = {SECRET}\n"}},
        fix={"write": {"settings.txt": "token = $MY_TOKEN\n"}},
        off={"forbid_secrets": False},
        path="settings.txt",
        purged=True,
    ),
}


def setup(p: Project, gate: Gate, **validation: Any) -> UserEdits:
    p.milestone("1A", tasks=gate.tasks)
    p.commit_plan()
    (p.root / ".env").write_text(f"MY_TOKEN={SECRET}\n")  # untracked, as .env files are
    p.configure(validation={**gate.config, **validation})
    p.script({"1A": {"implement": [gate.bad], "remediate": [gate.fix]}})
    return UserEdits(p.root)


def roles(p: Project) -> list[str]:
    return [c["role"] for c in p.agent_calls() if c["event"] == "start"]


@pytest.mark.parametrize("name", GATES)
def test_gate_rejects_then_remediation_fixes(project: Project, name: str) -> None:
    gate = GATES[name]
    edits = setup(project, gate)
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert roles(project) == ["implement", "remediate", "review"]
    remediation = next(c for c in project.agent_calls() if c["role"] == "remediate")
    assert f"$ {gate.check}\n" in remediation["prompt"] and gate.path in remediation["prompt"]
    assert f"FAILED: {gate.check}" in (project.root / "logs" / "1A.log").read_text()
    assert project.trailers() == ["1A"]
    if gate.purged:  # rejected content of these kinds is not kept in the branch's history
        assert gate.bad["write"][gate.path].strip() not in project.git("log", "-p", "--all")
    edits.assert_intact()


@pytest.mark.parametrize("name", GATES)
def test_gate_fails_the_milestone_when_not_fixed(project: Project, name: str) -> None:
    gate = GATES[name]
    edits = setup(project, gate)
    project.configure(validation=gate.config, review={"max_rounds": 1})
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1
    assert roles(project) == ["implement"]
    reason = next(m for m in project.status_json()["milestones"] if m["id"] == "1A")["reason"]
    assert reason.startswith("exit criteria not met after 1 round(s)") and gate.check in reason
    assert project.git("rev-parse", "main").strip() == head
    edits.assert_intact()


@pytest.mark.parametrize("name", GATES)
def test_gate_can_be_switched_off(project: Project, name: str) -> None:
    gate = GATES[name]
    edits = setup(project, gate, **gate.off)
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert roles(project) == ["implement", "review"]
    assert project.show(gate.path) == next(iter(gate.bad["write"].values()))
    edits.assert_intact()


def test_size_limit_is_about_new_or_grown_files(project: Project) -> None:
    (project.root / "data.bin").write_text("d" * 5000)  # over the limit already
    project.milestone("1A")
    project.commit_plan()
    project.configure(validation={"max_file_kb": 2})
    project.script({"1A": {"implement": [{"append": {"data.bin": "more"}, "write": {"ok.txt": "y" * 2048}}]}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "remediate" not in roles(project)


def test_scope_is_met_by_touching_any_named_path(project: Project) -> None:
    project.milestone("1A", tasks="- Write `src/` code and document it in `docs/guide.md`.")
    project.commit_plan()
    project.script({"1A": {"implement": [{"write": {"src/deep/x.py": "x = 1\n", "notes.txt": "n\n"}}]}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "remediate" not in roles(project)


@pytest.mark.parametrize(
    ("text", "marked"),
    [
        (MARKED, True),
        (MARKED.replace("\n", "\r\n"), True),
        ("<<<<<<<\na\n=======\nb\n>>>>>>>\n", True),
        ("Title\n=======\n\ntext\n", False),  # a Markdown heading
        ("<<<<<<< HEAD\nonly the start\n", False),
        ("x = '<<<<<<< '\n=======\n", False),
        ("=======\n>>>>>>> x\n<<<<<<< y\n", False),  # out of order
    ],
)
def test_conflict_markers(text: str, marked: bool) -> None:
    assert has_conflict_markers(text) is marked

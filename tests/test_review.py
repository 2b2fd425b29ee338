"""Review and remediation end to end: verdicts, findings, rounds, reviewer edits, the review agent.

Real repositories and agent processes (tests/fake_agent.py); every run also proves that the
user's uncommitted work in the main checkout survives byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_AGENT, Project
from user_edits import UserEdits

from orchestrator_lib import agents
from orchestrator_lib.config import AgentConfig
from orchestrator_lib.review import NO_VERDICT, VERDICT_SCHEMA, read_verdict

FINDINGS = [
    "app.txt says v1, the task asks for v2",
    'Name `helper()` clearly | a pipe, "quotes" and ünïcode stay as they are',
    "  leading spaces and a trailing backslash \\",
]


def starts(p: Project, role: str | None = None, milestone: str = "1A") -> list[dict[str, Any]]:
    return [
        c
        for c in p.agent_calls()
        if c["event"] == "start" and c["milestone"] == milestone and (role is None or c["role"] == role)
    ]


def record(p: Project, mid: str = "1A") -> dict[str, Any]:
    return next(m for m in p.status_json()["milestones"] if m["id"] == mid)


def one_milestone(p: Project, **kwargs: Any) -> UserEdits:
    p.milestone("1A", "Alpha", **kwargs)
    p.commit_plan()
    return UserEdits(p.root)


def test_review_fails_once_then_the_findings_reach_remediation_verbatim(project: Project) -> None:
    edits = one_milestone(project, tasks="- Write `app.txt` saying v2.")
    project.script(
        {
            "1A": {
                "implement": [{"write": {"app.txt": "v1\n"}}],
                "review": [{"verdict": "fail", "findings": FINDINGS}, {"verdict": "pass"}],
                "remediate": [{"write": {"app.txt": "v2\n"}}],
            }
        }
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["role"] for c in starts(project)] == ["implement", "review", "remediate", "review"]
    first_review, second_review = starts(project, "review")
    assert "+v1" in first_review["prompt"] and "Write `app.txt` saying v2." in first_review["prompt"]
    review_file = project.root / ".orchestrator" / "prompts" / "1A-review-1.json"
    assert str(review_file) in first_review["prompt"] and "`VERDICT: FAIL`" in first_review["prompt"]
    assert "+v2" in second_review["prompt"]  # re-reviewed: the remediation is in the diff against the base
    remediation = starts(project, "remediate")[0]
    for finding in FINDINGS:
        assert f"- {finding}\n" in remediation["prompt"]
    assert remediation["cwd"] == str(project.root / ".worktree" / "1A")
    assert project.show("app.txt") == "v2\n"
    assert project.trailers() == ["1A"]
    rec = record(project)
    assert (rec["status"], rec["review_rounds"], rec["last_findings"]) == ("merged", 2, [])
    reviews = project.root / "logs" / "reviews"
    first = (reviews / "1A-1.md").read_text()
    assert "FAIL" in first and all(f"- {f}" in first for f in FINDINGS)
    assert "PASS" in (reviews / "1A-2.md").read_text()
    assert "remediation round 1" in project.git("log", "--format=%s", "main")
    edits.assert_intact()


def test_failing_check_output_reaches_remediation_verbatim(project: Project) -> None:
    check = "grep -q v2 app.txt || { echo 'CHECK SAID: app.txt lacks v2 <exit 1>'; exit 1; }"
    edits = one_milestone(project, exit_checks=[f"app.txt says v2 (`{check}`)"])
    project.script(
        {"1A": {"implement": [{"write": {"app.txt": "v1\n"}}], "remediate": [{"write": {"app.txt": "v2\n"}}]}}
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["role"] for c in starts(project)] == ["implement", "remediate", "review"]  # no review of failing work
    prompt = starts(project, "remediate")[0]["prompt"]
    assert f"$ {check}\nCHECK SAID: app.txt lacks v2 <exit 1>" in prompt
    assert "Review findings" not in prompt
    assert "CHECK SAID: app.txt lacks v2" in (project.root / "logs" / "1A.log").read_text()  # kept in its log
    assert record(project)["review_rounds"] == 2
    assert project.show("app.txt") == "v2\n"
    edits.assert_intact()


def test_findings_and_failing_checks_together(project: Project) -> None:
    check = "a lint passes (`test ! -f lint.err || { cat lint.err; exit 1; }`)"
    edits = one_milestone(project, exit_checks=[check])
    project.script(
        {
            "1A": {
                "implement": [{"write": {"app.txt": "v1\n"}}],
                "review": [{"verdict": "fail", "findings": ["add a lint"]}, {"verdict": "pass"}],
                "remediate": [{"write": {"lint.err": "LINT: line too long\n"}}, {"delete": ["lint.err"]}],
            }
        }
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["role"] for c in starts(project)] == ["implement", "review", "remediate", "remediate", "review"]
    second_fix = starts(project, "remediate")[1]["prompt"]
    assert "LINT: line too long" in second_fix
    assert "add a lint" not in second_fix  # only the current round's problems
    edits.assert_intact()


def test_reviewer_that_always_fails_fails_the_milestone_and_merges_nothing(project: Project) -> None:
    project.milestone("1A", "Alpha")
    project.milestone("1B", "Beta")
    project.commit_plan()
    edits = UserEdits(project.root)
    project.configure(review={"max_rounds": 2})
    findings = [*FINDINGS[:2], "a long finding: " + "the error path of `load()` swallows the exception; " * 6]
    project.script({"1A": {"review": [{"verdict": "fail", "findings": findings}]}})
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1A failed: review failed after 2 round(s)" in out.stdout
    assert project.git("rev-parse", "main").strip() == head
    assert project.branches() == ["milestone/1A", "milestone/1B"]  # 1B passed, but the stage is all or nothing
    assert [c["role"] for c in starts(project)] == ["implement", "review", "remediate", "review"]
    rec = record(project)
    assert (rec["status"], rec["review_rounds"], rec["last_findings"]) == ("failed", 2, findings)
    assert FINDINGS[0] in rec["reason"]
    assert sorted(p.name for p in (project.root / "logs" / "reviews").iterdir()) == ["1A-1.md", "1A-2.md", "1B-1.md"]
    assert findings[2] in (project.root / "logs" / "reviews" / "1A-2.md").read_text()
    tasks = (project.root / "TASKS.md").read_text()
    assert "| 1A | Alpha | failed | 2 | 2 |" in tasks
    assert "Review findings for 1A (round 2):" in tasks
    for finding in findings:
        assert f"- {finding.replace('|', chr(92) + '|')}\n" in tasks
    edits.assert_intact()


@pytest.mark.parametrize("commits", [False, True], ids=["edits", "edits-and-commits"])
def test_reviewer_changes_are_discarded_and_logged_and_the_verdict_counts(project: Project, commits: bool) -> None:
    (project.root / "keep.txt").write_text("original\n")
    edits = one_milestone(project)
    meddle = {
        "write": {"1A.txt": "rewritten by the reviewer\n", "by-reviewer.txt": "x\n"},
        "delete": ["keep.txt"],
        **({"commit": "reviewer commit"} if commits else {}),
    }
    project.script({"1A": {"review": [{**meddle, "verdict": "fail", "findings": ["needs more"]}, {"verdict": "pass"}]}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["role"] for c in starts(project)] == ["implement", "review", "remediate", "review"]  # fail counted
    assert project.show("1A.txt").startswith("work of 1A")
    assert project.show("keep.txt") == "original\n"
    assert "by-reviewer.txt" not in project.git("ls-files")
    assert "reviewer commit" not in project.git("log", "--all", "--format=%s")
    log = (project.root / "logs" / "1A.log").read_text()
    assert "the reviewer changed" in log and "by-reviewer.txt" in log and "discarded" in log
    edits.assert_intact()


def test_verdict_from_the_last_output_line(project: Project) -> None:
    edits = one_milestone(project)
    line_review = {"verdict_via": "line", "print": ["Looked at the diff.", "Some prose - not a finding."]}
    project.script(
        {
            "1A": {
                "review": [
                    {**line_review, "verdict": "fail", "findings": ["first line finding", "second line finding"]},
                    {**line_review, "verdict": "pass"},
                ]
            }
        }
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    prompt = starts(project, "remediate")[0]["prompt"]
    assert "- first line finding\n- second line finding\n" in prompt
    assert "Looked at the diff" not in prompt and "not a finding" not in prompt
    assert record(project)["review_rounds"] == 2
    edits.assert_intact()


def test_no_verdict_is_retried_once_then_counts_as_a_failure(project: Project) -> None:
    edits = one_milestone(project)
    project.configure(review={"max_rounds": 1})
    project.script({"1A": {"review": [{"verdict_via": "none", "print": ["It looks fine to me."]}]}})
    out = project.run()
    assert out.returncode == 1
    assert len(starts(project, "review")) == 2
    rec = record(project)
    assert rec["status"] == "failed" and NO_VERDICT in rec["reason"]
    assert rec["last_findings"] == [NO_VERDICT]
    assert NO_VERDICT in (project.root / "logs" / "reviews" / "1A-1.md").read_text()
    edits.assert_intact()


def test_a_verdict_on_the_retry_counts(project: Project) -> None:
    edits = one_milestone(project)
    project.script({"1A": {"review": [{"verdict_via": "none"}, {"verdict": "pass"}]}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(starts(project, "review")) == 2
    assert record(project)["review_rounds"] == 1
    edits.assert_intact()


def test_review_agent_is_used_for_reviews_only(project: Project, tmp_path: Path) -> None:
    edits = one_milestone(project)
    reviewer_log = tmp_path / "reviewer.jsonl"
    reviewer = {
        "preset": "command",
        "command": [sys.executable, str(FAKE_AGENT), "--as-reviewer"],
        "env": {
            "FAKE_AGENT_SCRIPT": str(project.script_path),
            "FAKE_AGENT_LOG": str(reviewer_log),
            "FAKE_AGENT_STATE": str(project.agent_state),
        },
    }
    project.configure(review={"agent": reviewer})
    project.script(
        {"1A": {"review": [{"verdict": "fail", "findings": ["from the other reviewer"]}, {"verdict": "pass"}]}}
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["role"] for c in starts(project)] == ["implement", "remediate"]
    reviews = [json.loads(line) for line in reviewer_log.read_text().splitlines()]
    assert [c["role"] for c in reviews if c["event"] == "start"] == ["review", "review"]
    assert "- from the other reviewer" in starts(project, "remediate")[0]["prompt"]
    edits.assert_intact()


def test_review_disabled_skips_reviews(project: Project) -> None:
    edits = one_milestone(project)
    project.configure(review={"enabled": False})
    project.script({"1A": {"review": [{"verdict": "fail", "findings": ["never asked"]}]}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [c["role"] for c in starts(project)] == ["implement"]
    assert record(project)["review_rounds"] == 0
    assert not (project.root / "logs" / "reviews").exists()
    edits.assert_intact()


# ---------------------------------------------------------------- where a verdict comes from


def _result_event(**fields: Any) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False, **fields})


def test_verdict_sources_in_order(tmp_path: Path) -> None:
    review_file = tmp_path / "review.json"
    stream = "\n".join(
        [
            json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "- x\nVERDICT: PASS"}]}}),
            _result_event(
                result="- from the text\nVERDICT: PASS", structured_output={"verdict": "fail", "findings": ["so"]}
            ),
        ]
    )
    assert read_verdict(review_file, stream) == (False, ("so",), "structured output")
    review_file.write_text(json.dumps({"verdict": "pass", "findings": ["nit"]}))
    assert read_verdict(review_file, stream) == (True, ("nit",), "review file")
    review_file.write_text("{not json")
    assert read_verdict(review_file, "- a\n* b\nplain\nVERDICT: FAIL\n") == (False, ("a", "b"), "last line")


def test_claude_result_text_and_structured_output_as_final_text(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    text_only = _result_event(result="Reviewed.\n- one finding\nverdict: fail")
    assert read_verdict(missing, text_only) == (False, ("one finding",), "last line")
    assert read_verdict(missing, '{"verdict":"pass","findings":[]}') == (True, (), "structured output")
    assert read_verdict(missing, "VERDICT: PASS, I think") is None
    assert read_verdict(missing, "VERDICT: FAIL\nthanks") is None  # not the last line
    assert read_verdict(missing, "") is None
    (tmp_path / "bad.json").write_text(json.dumps({"verdict": "maybe"}))
    assert read_verdict(tmp_path / "bad.json", "") is None


def _claude_argv(role: str, tmp_path: Path) -> tuple[str, ...]:
    agent = AgentConfig(preset="claude", executable="claude", model="a-review-model")
    inv = agents.build_invocation(
        agent,
        role=role,
        milestone_id="1A",
        worktree=tmp_path,
        prompt="p",
        prompt_file=tmp_path / "p.md",
        base_env={},
        extra_env={},
        resume_session=None,
    )
    return inv.argv


def test_claude_reviewer_gets_the_verdict_schema_and_no_edit_tools(tmp_path: Path) -> None:
    argv = _claude_argv("review", tmp_path)
    assert json.loads(argv[argv.index("--json-schema") + 1]) == VERDICT_SCHEMA
    start = argv.index("--disallowedTools") + 1
    assert argv[start : start + 3] == ("Edit", "Write", "NotebookEdit")
    assert argv[argv.index("--model") + 1] == "a-review-model"
    for role in ("implement", "remediate", "resolve"):
        assert not {"--json-schema", "--disallowedTools"} & set(_claude_argv(role, tmp_path))

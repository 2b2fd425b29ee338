"""`draft` (an agent writes the plan, the runner validates it and hands the problems back) and `new`.

The drafting agent is the scripted fake agent (a real executable, ORCHESTRATOR_MILESTONE=draft,
ORCHESTRATOR_ROLE=draft) or the real Claude CLI against the fake Messages API on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import fake_anthropic as fa
from conftest import REPO, Project, run_orchestrator
from fake_anthropic import FakeAnthropic

from orchestrator_lib import draft
from orchestrator_lib.config import Config
from orchestrator_lib.plan import load_plan

PRD = "# Text statistics\n\nA tool that counts the words and lines of a file and reports both.\n"
UNKNOWN_DEP = "2A depends on 1C, which is not in the plan: add milestones/1C.md or remove the dependency"


def milestone(title: str, deps: str = "None", check: str = "- Tests pass (`true`)", estimate: str = "1 hour") -> str:
    lines = [f"# {title}", "", "## Tasks", f"- Build {title.lower()}.", "", "## Exit Criteria", check, ""]
    lines += ["## Dependencies", deps, ""]
    if estimate:
        lines += ["## Estimated Time", estimate, ""]
    return "\n".join(lines)


GOOD_PLAN = {
    "milestones/1A.md": milestone("Word counting", estimate="30 minutes"),
    "milestones/1B.md": milestone("Line counting", estimate="45m"),
    "milestones/2A.md": milestone("Report", deps="- 1A\n- 1B", estimate="2 hours"),
}
BAD_PLAN = {**GOOD_PLAN, "milestones/2A.md": milestone("Report", deps="- 1A\n- 1C", estimate="2 hours")}


def drafting(project: Project, *rounds: dict[str, str], max_rounds: int = 3) -> Path:
    """The fake agent writes `rounds[n]` on its n-th turn; the PRD is in the repository."""
    project.script({"draft": {"draft": [{"write": files} for files in rounds]}})
    project.configure(draft={"max_rounds": max_rounds})
    prd = project.root / "PRD.md"
    prd.write_text(PRD)
    return prd


def draft_calls(project: Project) -> list[dict[str, object]]:
    return [c for c in project.agent_calls() if c["event"] == "start" and c["role"] == "draft"]


def worktrees(project: Project) -> list[str]:
    return [line for line in project.git("worktree", "list", "--porcelain").splitlines() if line.startswith("worktree")]


# --- draft with the scripted agent ------------------------------------------------------------


def test_draft_hands_the_problems_back_and_writes_the_fixed_plan(project: Project) -> None:
    drafting(project, BAD_PLAN, GOOD_PLAN)

    out = project.run("draft", "PRD.md")

    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in (project.root / "milestones").iterdir()) == ["1A.md", "1B.md", "2A.md"]
    assert (project.root / "milestones" / "2A.md").read_text() == GOOD_PLAN["milestones/2A.md"]
    assert project.run("--validate-only").returncode == 0
    first, second = draft_calls(project)
    assert first["milestone"] == "draft" and str(first["cwd"]).endswith(".worktree/_draft")
    assert PRD.strip() in str(first["prompt"]) and "# The milestone format" in str(first["prompt"])
    assert "Languages:" in str(first["prompt"]) and "How tests are run:" in str(first["prompt"])
    assert f"milestones/2A.md:11: {UNKNOWN_DEP}" in str(second["prompt"])  # verbatim, with file and line
    assert "wave 1: 1A Word counting ~30m · 1B Line counting ~45m" in out.stdout
    assert "critical path by Estimated Time: 1B (45m) -> 2A (2h) = 2h45m" in out.stdout
    assert "agent runs: 6 (an implementation and a review for each milestone); up to 18" in out.stdout
    assert len(worktrees(project)) == 1  # the scratch worktree is gone
    assert not (project.root / ".orchestrator" / "draft").exists()
    status = project.git("status", "--porcelain")
    assert not {"logs/", ".orchestrator/", ".worktree/"} & set(re.findall(r"\S+/", status))  # runtime: excluded


def test_draft_never_overwrites_existing_milestones(project: Project) -> None:
    project.milestone("1A", "Mine")
    before = (project.root / "milestones" / "1A.md").read_text()
    drafting(project, GOOD_PLAN)

    out = project.run("draft", "PRD.md")

    assert out.returncode == 2
    assert "milestones/ already holds milestone files (1A.md)" in out.stderr and "--append" in out.stderr
    assert (project.root / "milestones" / "1A.md").read_text() == before
    assert draft_calls(project) == [] and not (project.root / ".orchestrator").exists()


def test_append_numbers_the_new_stages_after_the_existing_ones(project: Project) -> None:
    project.milestone("1A", "Mine")
    project.milestone("1B", "Also mine")
    mine = {p.name: p.read_text() for p in (project.root / "milestones").iterdir()}
    naive = {  # numbered from 1, as if the plan were empty; 2A needs the new 1A
        "milestones/1A.md": milestone("Word counting"),
        "milestones/2A.md": milestone("Report", deps="- 1A"),
    }
    drafting(project, naive)

    out = project.run("draft", "PRD.md", "--append")

    assert out.returncode == 0, out.stdout + out.stderr
    folder = project.root / "milestones"
    assert sorted(p.name for p in folder.iterdir()) == ["1A.md", "1B.md", "2A.md", "3A.md"]
    assert {n: (folder / n).read_text() for n in mine} == mine
    assert (folder / "2A.md").read_text().startswith("# Word counting")
    assert "## Dependencies\n- 2A\n" in (folder / "3A.md").read_text()
    assert "numbered after the existing stages: 1A -> 2A, 2A -> 3A" in out.stdout
    prompt = str(draft_calls(project)[0]["prompt"])
    assert "Number the stages from 2" in prompt and "- 1B: Also mine" in prompt
    assert project.run("--validate-only").returncode == 0


def test_append_lets_new_milestones_depend_on_existing_ones(project: Project) -> None:
    project.milestone("1A", "Mine")
    drafting(project, {"milestones/2A.md": milestone("Report", deps="- 1A (mine)")})

    out = project.run("draft", "PRD.md", "--append")

    assert out.returncode == 0, out.stdout + out.stderr
    assert "- 1A (mine)" in (project.root / "milestones" / "2A.md").read_text()
    assert "written: milestones/2A.md" in out.stdout


def test_still_invalid_after_the_last_round_keeps_the_draft_and_exits_1(project: Project) -> None:
    no_check = {"milestones/1A.md": milestone("Word counting", check="- Counting works")}
    drafting(project, no_check, max_rounds=2)

    out = project.run("draft", "PRD.md")

    assert out.returncode == 1, out.stdout + out.stderr
    assert len(draft_calls(project)) == 2
    assert not (project.root / "milestones").exists()
    kept = project.root / ".orchestrator" / "draft"
    assert (kept / "1A.md").read_text() == no_check["milestones/1A.md"]
    problems = (kept / "problems.txt").read_text()
    assert problems.startswith("milestones/1A.md:6: 1A has no executable Exit Criterion")
    assert "still invalid after 2 round(s)" in out.stdout and problems.strip() in out.stdout
    assert len(worktrees(project)) == 1


def test_files_written_outside_the_draft_folder_are_taken_in(project: Project) -> None:
    drafting(project, {"1A.md": milestone("Word counting"), ".orchestrator/draft/1B.md": milestone("Lines")})

    out = run_orchestrator(project.root.parent, "--project", str(project.root), "draft", "PRD.md")  # the project's

    assert out.returncode == 0, out.stdout + out.stderr
    assert "moved 1A.md into the draft folder" in out.stdout
    assert "moved .orchestrator/draft/1B.md into the draft folder" in out.stdout  # an ignored folder too
    assert sorted(p.name for p in (project.root / "milestones").iterdir()) == ["1A.md", "1B.md"]


def test_a_usage_limit_pauses_the_draft_which_then_goes_on(project: Project) -> None:
    reset = int(time.time()) + 3
    limit = {"print": [f"Claude AI usage limit reached|{reset}"], "exit": 1}
    project.script({"draft": {"draft": [limit, {"write": GOOD_PLAN}]}})
    project.configure(retry_attempts=0, claude_rate_limit_wait=1)  # a usage-limit wait is not a retry
    (project.root / "PRD.md").write_text(PRD)

    out = project.run("draft", "PRD.md")

    assert out.returncode == 0, out.stdout + out.stderr
    assert "usage limit: Claude AI usage limit reached" in out.stdout and "the draft waits until" in out.stdout
    _, second = draft_calls(project)
    assert float(str(second["start"])) >= reset
    assert "Claude AI usage limit reached" in (project.root / "logs" / "draft.log").read_text()
    assert (project.root / "milestones" / "2A.md").is_file()


def test_bad_input_exits_2_and_writes_nothing(project: Project) -> None:
    drafting(project, GOOD_PLAN)
    (project.root / "empty.md").write_text(" \n\n")
    cases = {
        ("draft", "nope.md"): "no such requirements document",
        ("draft", "empty.md"): "is empty: write the requirements first",
    }
    for argv, message in cases.items():
        out = project.run(*argv)
        assert out.returncode == 2 and message in out.stderr, (argv, out.stderr)
    project.configure(agent={"preset": "claude", "command": None, "executable": "/nonexistent/claude"})
    out = project.run("draft", "PRD.md")
    assert out.returncode == 2 and "is not installed" in out.stderr
    assert draft_calls(project) == []
    assert not (project.root / ".orchestrator").exists() and not (project.root / "milestones").exists()


# --- the draft's own checks ------------------------------------------------------------------


def test_a_drafted_plan_needs_a_check_an_estimate_and_stages_without_gaps(tmp_path: Path) -> None:
    folder = tmp_path / "milestones"
    folder.mkdir()
    (folder / "1A.md").write_text(milestone("Prose only", check="- It works"))
    (folder / "1B.md").write_text(milestone("No estimate", estimate=""))
    (folder / "3A.md").write_text(milestone("After a gap", deps="- 1A"))
    plan, problems = load_plan(folder, tmp_path)
    assert problems == []  # --validate-only accepts it all

    found = [str(p) for p in draft.draft_problems(plan, {"1A.md", "1B.md", "3A.md"}, 1, "milestones")]

    assert found == [
        "milestones/1A.md:6: 1A has no executable Exit Criterion: add a list item whose code span is a shell "
        "command that exits 0 only when the work is done, e.g. '- The tests pass (`python -m pytest -q`)'",
        "milestones/1B.md: no '## Estimated Time' section: add one with the expected time, e.g. '2 hours'",
        "milestones: stage 2 is empty: number the stages from 1 without gaps",
    ]


def test_renumbering_renames_dependencies_among_the_new_milestones_only() -> None:
    files = {"1A.md": "", "1B.md": "", "3A.md": ""}
    renamed = draft.renumber(files, first_stage=4)
    assert renamed == {"1A": "4A", "1B": "4B", "3A": "6A"}
    text = "# T\n\nSee 1A.\n\n## Dependencies\n- 1A\n- 1B, 2C\n\n## Estimated Time\n1A hours\n"
    assert draft.rename_dependencies(text, renamed) == (
        "# T\n\nSee 1A.\n\n## Dependencies\n- 4A\n- 4B, 2C\n\n## Estimated Time\n1A hours\n"
    )
    assert draft.renumber({"4A.md": ""}, first_stage=4) == {}


def test_agent_runs_follow_the_review_settings() -> None:
    assert draft.agent_runs(3, Config()).startswith("agent runs: 6 (an implementation and a review")
    from orchestrator_lib.config import ReviewConfig

    off = Config(review=ReviewConfig(enabled=False, max_rounds=2))
    assert draft.agent_runs(3, off).startswith("agent runs: 3 (an implementation for each milestone); up to 6")


# --- new ------------------------------------------------------------------------------------


def test_new_writes_every_section_and_validates(project: Project) -> None:
    out = project.run("new", "1A", "Word counting")

    assert out.returncode == 0, out.stderr
    text = (project.root / "milestones" / "1A.md").read_text()
    headings = re.findall(r"(?m)^#+ .+$", text)
    assert headings == [
        "# Word counting",
        "## Description",
        "## Entry Requirements",
        "## Tasks",
        "## Exit Criteria",
        "## Dependencies",
        "## Estimated Time",
    ]
    assert "## Dependencies\nNone\n" in text
    assert project.run("--validate-only").returncode == 0


def test_new_with_deps_fills_dependencies(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")

    out = project.run("new", "2C", "Command-line report", "--deps", "1A,1B")

    assert out.returncode == 0, out.stderr
    text = (project.root / "milestones" / "2C.md").read_text()
    assert text.startswith("# Command-line report\n") and "## Dependencies\n- 1A\n- 1B\n" in text
    plan, problems = load_plan(project.root / "milestones", project.root)
    assert problems == [] and plan.get("2C") is not None and plan.get("2C").dependencies == ("1A", "1B")  # type: ignore[union-attr]


def test_new_refuses_an_existing_or_bad_id(project: Project) -> None:
    path = project.milestone("1A", "Mine")
    before = path.read_text()
    cases = {
        ("new", "1A", "Again"): "milestones/1A.md already exists",
        ("new", "2c", "Lower case"): "did you mean 2C?",
        ("new", "A1", "Backwards"): "'A1' is not a milestone id",
        ("new", "2A", "Same stage", "--deps", "2B"): "2B must be of a stage before 2",
        ("new", "2A", "Bad dep", "--deps", "1a"): "did you mean 1A?",
        ("new", "2A", "  "): "the title is empty",
    }
    for argv, message in cases.items():
        out = project.run(*argv)
        assert out.returncode == 2 and message in out.stderr, (argv, out.stderr)
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["1A.md"]


# --- the format reference --------------------------------------------------------------------

DOC = (REPO / "docs" / "milestones.md").read_text()


def test_the_packaged_reference_is_the_docs_page() -> None:
    assert draft.format_reference() == DOC
    assert "(docs/milestones.md)" in (REPO / "README.md").read_text()


def test_every_example_in_the_reference_is_a_valid_drafted_plan(tmp_path: Path) -> None:
    examples = re.findall(r"(?ms)^````markdown file=(milestones/\S+\.md)\n(.*?)^````$", DOC)
    assert len(examples) == 2
    for path, text in examples:
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    plan, problems = load_plan(tmp_path / "milestones", tmp_path)
    names = {Path(path).name for path, _ in examples}
    assert problems == [] and draft.draft_problems(plan, names, 1, "milestones") == []
    assert [m.id for m in plan.milestones] == ["1A", "2A"] and plan.milestones[1].dependencies == ("1A",)


def test_every_check_example_in_the_reference_is_read_as_documented(tmp_path: Path) -> None:
    block = re.search(r"(?ms)^```markdown\n(## Exit Criteria\n.*?)^```$", DOC)
    assert block
    (tmp_path / "1A.md").write_text("# T\n\n## Tasks\n- Work.\n\n" + block.group(1))
    plan, problems = load_plan(tmp_path, tmp_path)
    assert problems == []
    commands = [c.command for c in plan.milestones[0].exit_criteria]
    assert commands == ["python -m pytest -q tests/test_words.py", 'python -c "import textstats"', None]


# --- the real Claude CLI -------------------------------------------------------------------


def test_real_cli_drafts_through_one_failed_validation(
    project: Project, fake_anthropic: FakeAnthropic, claude_cli: str, tmp_path: Path
) -> None:
    env = fa.claude_env(fake_anthropic, tmp_path / "scratch")
    agent = {"preset": "claude", "command": None, "executable": claude_cli, "env": env}
    project.configure(agent={**agent, "timeout_minutes": 1, "idle_timeout_minutes": 1})
    (project.root / "PRD.md").write_text(PRD)
    files = [(path, text) for path, text in BAD_PLAN.items()]
    round_one = [fa.write(path, text) for path, text in files] + [fa.text("The plan is written.")]
    round_two = [fa.bash("sed -i 's/- 1C/- 1B/' milestones/2A.md"), fa.text("Fixed 2A.")]
    fake_anthropic.add_script([*round_one, *round_two], cwd_contains=".worktree/_draft")

    out = project.run("draft", "PRD.md", timeout=90)

    assert out.returncode == 0, out.stdout + out.stderr
    assert (project.root / "milestones" / "2A.md").read_text() == GOOD_PLAN["milestones/2A.md"]
    assert project.run("--validate-only").returncode == 0
    requests = fake_anthropic.main_requests
    assert len(requests) == 6
    first, fix = requests[0], requests[4]
    assert "A tool that counts the words and lines" in json.dumps(first.messages)
    assert "The milestone format reference" in json.dumps(first.messages)
    assert f"milestones/2A.md:11: {UNKNOWN_DEP}" in json.dumps(fix.messages[-1])  # verbatim, as the new turn
    assert "# Word counting" in json.dumps(fix.messages[:-1])  # ... of the same conversation (--resume)
    sessions = {r.headers.get("x-claude-code-session-id") for r in requests}
    assert len(sessions) == 1
    log = (project.root / "logs" / "draft.log").read_text()
    assert log.count("===== draft draft") == 2

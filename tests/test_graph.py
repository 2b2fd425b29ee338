"""The plan as a graph (orchestrator_lib/graph.py), the merge forecast (conflicts.py) and their views:
config `schedule`, `--schedule`, `--stage N` in dependencies mode, `plan`'s waves and critical path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Project

from orchestrator_lib import conflicts, graph, preflight
from orchestrator_lib.errors import UsageError
from orchestrator_lib.plan import Milestone, Plan

SKEWED = {  # id -> (dependencies, minutes)
    "1A": ((), 40),
    "1B": ((), 5),
    "1C": ((), 5),
    "2A": (("1B",), 5),
    "2B": (("1C",), 5),
    "2C": (("1A",), 5),
    "3A": (("2A", "2B", "2C"), 5),
}


def milestone(mid: str, deps: tuple[str, ...] = (), minutes: int | None = None) -> Milestone:
    return Milestone(mid, int(mid[0]), mid[1], f"M {mid}", Path(f"{mid}.md"), "", (), "", (), deps, minutes, "")


def skewed() -> list[Milestone]:
    return [milestone(mid, deps, minutes) for mid, (deps, minutes) in SKEWED.items()]


def test_ready_needs_every_dependency_merged_and_orders_by_stage_then_id() -> None:
    plan = skewed()
    assert [m.id for m in graph.ready(plan, set())] == ["1A", "1B", "1C"]
    assert [m.id for m in graph.ready(plan[3:], {"1B", "1C"})] == ["2A", "2B"]
    assert [m.id for m in graph.ready(reversed(plan[3:]), {"1A", "1B", "1C"})] == ["2A", "2B", "2C"]
    assert graph.waits_for(plan[-1], {"2A"}) == ("2B", "2C")


def test_a_failure_blocks_its_dependents_directly_or_not_and_nothing_else() -> None:
    plan = skewed()
    assert graph.dependents(plan, "1B") == ["2A", "3A"]
    assert graph.dependents(plan, "3A") == []
    assert graph.failed_roots(plan, "3A", {"1B"}) == ["1B"]
    assert graph.failed_roots(plan, "3A", {"1B", "2C"}) == ["1B", "2C"]
    assert graph.blocked_reason(["1B"]) == "waits for 1B, which failed"


def test_waves_and_the_critical_path_by_estimated_time() -> None:
    plan = skewed()
    assert [[m.id for m in w] for w in graph.waves(plan)] == [["1A", "1B", "1C"], ["2A", "2B", "2C"], ["3A"]]
    assert [[m.id for m in w] for w in graph.waves(plan, {"1A", "1B", "1C", "2C"})] == [["2A", "2B"], ["3A"]]
    assert graph.critical_path(plan) == graph.CriticalPath(("1A", "2C", "3A"), 50)
    assert graph.critical_path(plan, {"1A"}) == graph.CriticalPath(("1B", "2A", "3A"), 15)  # ties: lower ids
    assert graph.stage_minutes(plan) == 50
    assert graph.critical_path([]) == graph.CriticalPath((), 0)
    unestimated = [milestone("1A"), milestone("2A", ("1A",))]
    assert graph.critical_path(unestimated).ids == ("1A", "2A")


def test_waiting_names_the_unmerged_dependencies_of_milestones_not_started() -> None:
    statuses = {"1A": "running", "1B": "merged", "1C": "merged", "2A": "pending", "2C": "blocked"}
    assert graph.waiting(skewed(), statuses) == {"2C": ("1A",), "3A": ("2A", "2B", "2C")}


def test_stage_n_in_dependencies_mode_needs_only_its_dependencies_merged() -> None:
    plan = Plan(tuple(skewed()))
    with pytest.raises(UsageError, match="earlier stages merged first"):
        preflight.selection(plan, ["1B", "1C"], 2, None, "milestones")
    picked = preflight.selection(plan, ["1A", "1B", "1C"], 2, None, "milestones", "dependencies")
    assert [(s, [m.id for m in ms]) for s, ms in picked] == [(2, ["2A", "2B", "2C"])]
    with pytest.raises(UsageError, match=r"stage 2 depends on 1A, not merged yet"):
        preflight.selection(plan, ["1B", "1C"], 2, None, "milestones", "dependencies")
    one = preflight.selection(plan, ["1B"], None, "2A", "milestones", "dependencies")
    assert [(s, [m.id for m in ms]) for s, ms in one] == [(2, ["2A"])]


@pytest.mark.parametrize(
    ("text", "ok"),
    [("git version 2.39.5", True), ("git version 2.38.0.windows.1", True), ("git version 2.37.1 (Apple)", False)],
)
def test_the_merge_queue_needs_git_2_38(text: str, ok: bool, tmp_path: Path) -> None:
    problem = conflicts.git_problem(text)
    assert (problem is None) == ok
    if not ok:
        assert problem is not None and "2.37" in problem and "needs git 2.38 or newer" in problem
        with pytest.raises(UsageError, match=r"git 2\.38"):
            conflicts.require_git(tmp_path, lambda _root: text)


def _commit(p: Project, branch: str, start: str, files: dict[str, str]) -> None:
    p.git("checkout", "-q", "-b", branch, start)
    for name, text in files.items():
        (p.root / name).write_text(text)
    p.git("add", "-A")
    p.git("commit", "-q", "-m", branch)
    p.git("checkout", "-q", "main")


def test_the_forecast_puts_clean_merges_first_and_names_the_conflicting_files(project: Project) -> None:
    (project.root / "shared.txt").write_text("a\noriginal\nb\n")
    project.commit_plan("shared")
    _commit(project, "milestone/1A", "main", {"shared.txt": "a\nfrom 1A\nb\n"})
    _commit(project, "milestone/1B", "main", {"other.txt": "1B\n"})
    _commit(project, "milestone/1C", "main", {"shared.txt": "a\nfrom 1C\nb\n"})
    before = project.git("for-each-ref")
    found = conflicts.forecast(project.root, "main", [(m, f"milestone/{m}") for m in ("1C", "1B", "1A")])
    assert found.order == ("1A", "1B", "1C")
    assert found.conflicts == {"1C": ("shared.txt",)}
    assert conflicts.predict(project.root, "main", "milestone/1C") == ()  # alone, against the base: clean
    assert project.git("for-each-ref") == before and project.git("status", "--porcelain") == ""


def test_config_schedule_is_checked_and_the_flag_overrides_it(project: Project) -> None:
    project.milestone("1A")
    project.milestone("2A", deps=["1A"], estimate="2 hours")
    project.configure(schedule="graph")
    project.commit_plan()
    out = project.run("--validate-only")
    assert out.returncode == 2
    assert '`schedule` must be "stages" or "dependencies"' in out.stderr
    project.configure(schedule="dependencies")
    shown = project.run("plan")
    assert shown.returncode == 0, shown.stderr
    assert "schedule: dependencies" in shown.stdout
    assert "wave 1: 1A" in shown.stdout and "wave 2: 2A" in shown.stdout
    assert "Critical path: 1A -> 2A ~2h10m" in shown.stdout
    assert "schedule: stages" in project.run("plan", "--schedule", "stages").stdout
    assert "schedule: stages" in project.run("--whatif", "--schedule", "stages").stdout
    bad = project.run("--schedule", "sometimes")
    assert bad.returncode == 2 and "invalid choice: 'sometimes'" in bad.stderr
    checked = project.run("validate", "--schedule", "dependencies")  # validate takes it as run does
    assert checked.returncode == 0, checked.stderr
    assert project.run("validate", "--schedule", "sometimes").returncode == 2


def test_plan_shows_which_branches_will_conflict(project: Project) -> None:
    (project.root / "shared.txt").write_text("a\noriginal\nb\n")
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    _commit(project, "milestone/1A", "main", {"shared.txt": "a\nfrom 1A\nb\n"})
    _commit(project, "milestone/1B", "main", {"shared.txt": "a\nfrom 1B\nb\n"})
    out = project.run("plan")
    assert out.returncode == 0, out.stderr
    assert "1A   merges cleanly" in out.stdout
    assert "1B   will conflict in shared.txt" in out.stdout


def test_status_and_tasks_show_what_a_waiting_milestone_waits_for(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("2A", deps=["1A", "1B"])
    project.commit_plan()
    project.script({"1B": {"implement": [{"exit": 1}]}})
    out = project.run("--schedule", "stages")
    assert out.returncode == 1
    data = project.status_json()
    waits = {m["id"]: m["waits_for"] for m in data["milestones"]}
    assert waits == {"1A": [], "1B": [], "2A": ["1A", "1B"]}
    assert "waits for 1A, 1B" in project.run("status").stdout
    tasks = (project.root / "TASKS.md").read_text()
    assert "| 2A |" in tasks and "waits for 1A, 1B" in tasks
    json.dumps(data)  # still plain JSON


def test_the_repository_git_is_new_enough_for_these_tests() -> None:
    text = subprocess.run(("git", "--version"), capture_output=True, text=True, check=True).stdout
    assert conflicts.git_problem(text) is None, text

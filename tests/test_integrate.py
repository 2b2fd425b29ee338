"""Merging a stage: the integration worktree, the resolver, validation of the merged result,
moving the base branch, and cleaning up. Real repositories and agent processes throughout."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from conftest import Project
from user_edits import UserEdits

ORIGINAL = "line 1\noriginal\nline 3\n"
BOTH = "line 1\nfrom 1A\nfrom 1B\nline 3\n"
CLASH = "test ! -f 1A.txt || test ! -f 1B.txt || test -f compat.txt || { echo 'TESTS: 1A and 1B clash'; exit 1; }"


def conflicting_stage(p: Project, resolve: dict[str, Any] | None = None, staged: bool = True) -> UserEdits:
    """1A and 1B change the same line of shared.txt."""
    (p.root / "shared.txt").write_text(ORIGINAL)
    p.milestone("1A", "Alpha")
    p.milestone("1B", "Beta's part")
    p.commit_plan()
    p.script(
        {
            "1A": {"implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1A")}}]},
            "1B": {"implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1B")}}]},
            "*": {"resolve": [resolve or {"resolve": "both"}]},
        }
    )
    return UserEdits(p.root, staged=staged)


def clashing_stage(p: Project, resolve: dict[str, Any]) -> UserEdits:
    """1A and 1B merge cleanly, but the tests fail once both are in."""
    p.milestone("1A", "Alpha")
    p.milestone("1B", "Beta")
    p.commit_plan()
    p.configure(validation={"test_command": CLASH})
    p.script({"*": {"resolve": [resolve]}})
    return UserEdits(p.root)


def resolver_calls(p: Project) -> list[dict[str, Any]]:
    return [c for c in p.agent_calls() if c["role"] == "resolve" and c["event"] == "start"]


def worktree_paths(p: Project) -> list[str]:
    out = p.git("worktree", "list", "--porcelain")
    return [line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")]


def merge_commits(p: Project) -> dict[str, tuple[int, str]]:
    """Milestone id -> (number of parents, full message) of its merge commit on main."""
    found = {}
    for record in p.git("log", "--first-parent", "--format=%P%x1f%B%x00", "main").split("\0"):
        parents, _, body = record.strip().partition("\x1f")
        for line in body.splitlines():
            if line.startswith("Milestone: "):
                found[line.removeprefix("Milestone: ")] = (len(parents.split()), body)
    return found


def test_conflict_is_resolved_and_the_stage_merges(project: Project) -> None:
    edits = conflicting_stage(project)
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1B: the resolver fixed the conflicts in shared.txt" in out.stdout
    assert project.show("shared.txt") == BOTH
    assert (project.root / "shared.txt").read_text() == BOTH  # the checkout was fast-forwarded
    commits = merge_commits(project)
    assert commits.keys() == {"1A", "1B"}
    assert commits["1B"][0] == 2 and commits["1B"][1].startswith("Merge milestone 1B: Beta's part")
    (call,) = resolver_calls(project)
    assert call["cwd"] == str(project.root / ".worktree" / "_integration")
    assert "conflicts in: shared.txt" in call["prompt"]
    assert "--- Milestone 1A: Alpha ---" in call["prompt"] and "--- Milestone 1B: Beta's part ---" in call["prompt"]
    assert "Milestone 1B." in call["prompt"]  # the milestone files themselves
    edits.assert_intact()


def test_failing_resolver_keeps_everything_and_says_how_to_finish(project: Project) -> None:
    edits = conflicting_stage(project, {"resolve": "fail"}, staged=False)  # the steps need nothing staged
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1
    assert project.git("rev-parse", "main").strip() == head
    tips = {b: project.git("rev-parse", b).strip() for b in project.branches()}
    assert tips.keys() == {"milestone/1A", "milestone/1B"}
    assert project.branches("orchestrator/*") == []
    assert str(project.root / ".worktree" / "_integration") not in worktree_paths(project)
    assert (project.root / "shared.txt").read_text() == ORIGINAL
    assert project.statuses() == {"1A": "done", "1B": "blocked"}
    assert "merging milestone/1B conflicts in shared.txt" in out.stdout
    assert f"To finish by hand, in {project.root} with main checked out and nothing staged:" in out.stdout
    steps = [line.strip() for line in out.stdout.splitlines() if line.startswith("    ")]
    assert steps == [
        "git merge --no-ff milestone/1A -m 'Merge milestone 1A: Alpha' -m 'Milestone: 1A'",
        "git merge --no-ff milestone/1B -m 'Merge milestone 1B: Beta'\"'\"'s part' -m 'Milestone: 1B'",
        "# edit shared.txt to resolve the conflicts, then:",
        "git add -- shared.txt",
        "git commit --no-edit",
    ]
    edits.assert_intact()
    # Follow the instructions to the letter, as a person would.
    for step in steps:
        if step.startswith("#"):
            (project.root / "shared.txt").write_text(BOTH)
            continue
        done = subprocess.run(step, shell=True, cwd=project.root, capture_output=True, text=True)
        assert done.returncode == (1 if "milestone/1B" in step else 0), step + done.stdout + done.stderr
    assert {b: project.git("rev-parse", b).strip() for b in project.branches()} == tips
    again = project.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout
    assert project.statuses() == {"1A": "merged", "1B": "merged"}
    assert project.show("shared.txt") == BOTH
    edits.assert_intact()


def test_resolver_that_leaves_conflict_markers_is_blocked(project: Project) -> None:
    edits = conflicting_stage(project, {"resolve": "leave"})
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1
    assert "the resolver left conflict markers in shared.txt" in out.stdout
    assert project.git("rev-parse", "main").strip() == head
    assert project.branches() == ["milestone/1A", "milestone/1B"]
    edits.assert_intact()


def test_resolver_that_commits_by_itself_still_gives_one_merge_with_trailer(project: Project) -> None:
    edits = conflicting_stage(project, {"write": {"shared.txt": BOTH}, "resolve": "leave", "commit": "my own commit"})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.show("shared.txt") == BOTH
    assert merge_commits(project)["1B"][0] == 2
    assert "my own commit" not in project.git("log", "--format=%s", "main")
    edits.assert_intact()


def test_clean_merge_that_breaks_the_tests_is_fixed_by_the_resolver(project: Project) -> None:
    edits = clashing_stage(project, {"write": {"compat.txt": "both fit now\n"}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1B: the resolver fixed the tests after the merge" in out.stdout
    (call,) = resolver_calls(project)
    assert "The merged result fails validation" in call["prompt"] and "TESTS: 1A and 1B clash" in call["prompt"]
    assert project.show("compat.txt") == "both fit now\n"
    log = project.git("log", "--first-parent", "--format=%B", "main")
    assert "Fix integration of milestone 1B" in log and "Milestone-Fix: 1B" in log
    assert sorted(project.trailers()) == ["1A", "1B"]
    edits.assert_intact()


@pytest.mark.parametrize("resolve", ["fail", "leave"])
def test_clean_merge_that_breaks_the_tests_is_blocked_never_merged(project: Project, resolve: str) -> None:
    edits = clashing_stage(project, {"resolve": resolve})
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1
    assert "after merging milestone/1B the validation fails" in out.stdout and "TESTS: 1A and 1B clash" in out.stdout
    assert f"# make `{CLASH}` pass again, then commit the fix" in out.stdout
    assert project.git("rev-parse", "main").strip() == head
    assert project.branches() == ["milestone/1A", "milestone/1B"]
    assert project.branches("orchestrator/*") == []
    assert not (project.root / "1A.txt").exists()
    assert project.statuses() == {"1A": "done", "1B": "blocked"}
    edits.assert_intact()


def test_after_a_merge_worktrees_and_branches_are_removed_and_pruned(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert worktree_paths(project) == [str(project.root)]
    assert project.branches() == [] and project.branches("orchestrator/*") == []
    assert [p.name for p in (project.root / ".worktree").iterdir()] == []
    admin = project.root / ".git" / "worktrees"
    assert not admin.exists() or list(admin.iterdir()) == []


def test_keep_worktrees_keeps_them(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    project.configure(keep_worktrees=True)
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    root = project.root / ".worktree"
    assert sorted(worktree_paths(project)) == [str(project.root), str(root / "1A"), str(root / "1B")]
    assert project.branches() == ["milestone/1A", "milestone/1B"]
    assert project.branches("orchestrator/*") == []  # the integration worktree is always the runner's own


def test_base_branch_not_checked_out_moves_and_is_cleaned(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(base_branch="main")
    project.git("switch", "-q", "-c", "my-work")
    edits = UserEdits(project.root)
    head = project.git("rev-parse", "HEAD").strip()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.trailers("main") == ["1A"]
    assert project.git("rev-parse", "HEAD").strip() == head  # the user's branch is not touched
    assert project.branches() == []
    edits.assert_intact()


def test_untracked_user_file_where_the_stage_adds_one_stops_the_move(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    edits = UserEdits(project.root)
    (project.root / "1A.txt").write_text("mine, not committed\n")
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1
    assert "your uncommitted changes in 1A.txt" in out.stdout and "orchestrator/stage-1" in out.stdout
    assert project.git("rev-parse", "main").strip() == head
    assert (project.root / "1A.txt").read_text() == "mine, not committed\n"
    assert project.show("1A.txt", "orchestrator/stage-1").startswith("work of 1A")
    edits.assert_intact()


def test_files_left_by_the_tests_are_never_committed(project: Project) -> None:
    """test_command runs in every worktree; what it leaves behind is not work and never reaches a commit."""
    conflicting_stage(project)  # a resolver merge commit and the TASKS.md commit, both after test runs
    project.configure(validation={"test_command": "echo ran >> test-artifact.log && mkdir -p cache && touch cache/x"})
    project.script(
        {
            "1A": {
                "implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1A")}}],
                "review": [{"verdict": "fail", "findings": ["again"]}, {"verdict": "pass"}],
            },
            "1B": {"implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1B")}}]},
        }
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "remediate" in [c["role"] for c in project.agent_calls()]
    assert project.git("log", "--all", "--format=%H", "--", "test-artifact.log", "cache") == ""
    assert (
        "the checks left cache/x, test-artifact.log behind; discarded" in (project.root / "logs" / "1A.log").read_text()
    )

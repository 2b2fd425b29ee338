"""The runner touches only what it made: its TASKS.md, its branches, its worktrees.

Real repositories, real runs of the fake agent; each test compares hashes of the tree and the
lists of branches before and after.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import Project

from orchestrator_lib import render

HAND_WRITTEN = b"# My tasks\r\n\r\n- [ ] call the bank \xc3\xbc\r\n- [x] nothing else"


def tree_hash(root: Path) -> str:
    """Every file of the checkout outside .git, by path and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if ".git" not in p.relative_to(root).parts[:1]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def refs(p: Project) -> str:
    return p.git("for-each-ref", "--format=%(refname) %(objectname)")


def committed(p: Project, path: str, ref: str = "main") -> bytes:
    return subprocess.run(("git", "show", f"{ref}:{path}"), cwd=p.root, capture_output=True, check=True).stdout


def plan_of_two_stages(p: Project) -> None:
    p.milestone("1A")
    p.milestone("2A", deps=["1A"])
    p.configure(review={"enabled": False, "max_rounds": 1})
    p.commit_plan()


# ---------------------------------------------------------------- §3: the user's TASKS.md


@pytest.mark.parametrize("content", [HAND_WRITTEN, b""], ids=["hand-written", "empty"])
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "untracked"])
@pytest.mark.parametrize("verb", [("--validate-only",), ()], ids=["validate-only", "run"])
def test_a_tasks_file_the_runner_did_not_write_is_refused_and_left_alone(
    project: Project, content: bytes, committed: bool, verb: tuple[str, ...]
) -> None:
    plan_of_two_stages(project)
    (project.root / "TASKS.md").write_bytes(content)
    if committed:
        project.git("add", "TASKS.md")
        project.git("commit", "-qm", "my own task list")
    before, refs_before = tree_hash(project.root), refs(project)
    out = project.run(*verb)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "TASKS.md" in out.stderr and "tasks_file" in out.stderr and "delete the file" in out.stderr
    assert "Traceback" not in out.stderr
    assert (project.root / "TASKS.md").read_bytes() == content
    assert tree_hash(project.root) == before and refs(project) == refs_before
    assert not (project.root / ".orchestrator").exists() and not (project.root / "logs").exists()
    assert project.agent_calls() == []


def test_a_hand_written_tasks_file_committed_but_deleted_in_the_checkout_is_refused(project: Project) -> None:
    plan_of_two_stages(project)
    (project.root / "TASKS.md").write_bytes(HAND_WRITTEN)
    project.git("add", "TASKS.md")
    project.git("commit", "-qm", "my own task list")
    (project.root / "TASKS.md").unlink()
    out = project.run()
    assert out.returncode == 2, out.stdout + out.stderr
    assert "committed on main" in out.stderr
    assert not (project.root / "TASKS.md").exists() and committed(project, "TASKS.md") == HAND_WRITTEN


def test_tasks_file_set_to_another_name_leaves_the_users_file_alone(project: Project) -> None:
    plan_of_two_stages(project)
    project.configure(review={"enabled": False, "max_rounds": 1}, tasks_file="docs/PROGRESS.md")
    (project.root / "TASKS.md").write_bytes(HAND_WRITTEN)
    project.git("add", "-A")
    project.git("commit", "-qm", "my own task list, and the orchestrator writes elsewhere")
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert (project.root / "TASKS.md").read_bytes() == HAND_WRITTEN
    assert committed(project, "TASKS.md") == HAND_WRITTEN
    progress = (project.root / "docs" / "PROGRESS.md").read_text()
    assert render.is_generated(progress) and render.is_unedited(progress)
    assert "| 2A | Milestone 2A | merged |" in project.show("docs/PROGRESS.md")


def test_an_uncommitted_edit_to_the_generated_tasks_file_stops_the_base_move_and_is_kept(project: Project) -> None:
    plan_of_two_stages(project)
    assert project.run("--stage", "1").returncode == 0
    tasks = project.root / "TASKS.md"
    assert render.is_unedited(tasks.read_text())
    edited = tasks.read_bytes().replace(b"# Tasks", b"# Tasks\n\nMy note: ask Ana about 2A.", 1)
    tasks.write_bytes(edited)
    main_before = project.git("rev-parse", "main")
    out = project.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "TASKS.md" in out.stdout and "orchestrator/stage-2" in out.stdout
    assert "holds your edits" in out.stdout
    assert tasks.read_bytes() == edited, "the user's edit to TASKS.md was overwritten"
    assert project.git("rev-parse", "main") == main_before
    assert project.trailers("orchestrator/stage-2")[0] == "2A"  # the merged result waits there

    project.git("checkout", "--", "TASKS.md")  # the user drops the edit: the next run moves main
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.trailers()[0] == "2A"
    assert render.is_unedited(tasks.read_text()) and "| 2A | Milestone 2A | merged |" in tasks.read_text()


def test_a_generated_tasks_file_is_rewritten_while_unedited(project: Project) -> None:
    plan_of_two_stages(project)
    assert project.run("--stage", "1").returncode == 0
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "holds your edits" not in out.stdout
    assert project.git("status", "--porcelain").strip() == ""


def test_the_mark_proves_the_file_unedited() -> None:
    from orchestrator_lib.plan import Milestone, Plan
    from orchestrator_lib.state import RunState

    plan = Plan((Milestone("1A", 1, "A", "Alpha", Path("1A.md"), "", (), "", (), (), None, ""),))
    text = render.tasks_markdown(render.snapshot(plan, {}, RunState()))
    assert render.is_generated(text) and render.is_unedited(text)
    assert render.is_unedited(text.replace("\n", "\r\n"))  # a checkout with autocrlf
    assert not render.is_unedited(text + "my note\n")
    assert not render.is_unedited(text.replace("pending", "done"))
    assert render.is_unedited("<!-- Generated by Claude Code Orchestrator; edits are overwritten. -->\n# Tasks\n")
    assert not render.is_generated("# Tasks\n") and not render.is_unedited("")


# ---------------------------------------------------------------- §7: clean


def failed_run_with_user_branches(p: Project) -> dict[str, str]:
    """1A done and 1B failed (both branches the runner's), plus the user's look-alike branches."""
    p.milestone("1A")
    p.milestone("1B", exit_checks=["(`false`)"])
    p.configure(review={"enabled": False, "max_rounds": 1})
    p.commit_plan()
    p.git("branch", "milestone/mine")  # merged (it is main): clean used to delete it
    p.git("checkout", "-q", "-b", "orchestrator/experiment")
    (p.root / "idea.txt").write_text("my unmerged idea\n")
    p.git("add", "idea.txt")
    p.git("commit", "-qm", "an idea")
    p.git("checkout", "-q", "main")
    assert p.run().returncode == 1
    return {b: p.git("rev-parse", b).strip() for b in ("milestone/mine", "orchestrator/experiment")}


def test_clean_keeps_branches_it_did_not_make_even_with_force(project: Project) -> None:
    users = failed_run_with_user_branches(project)
    out = project.run("clean")
    assert out.returncode == 0, out.stderr
    assert "not ours, kept: milestone/mine, orchestrator/experiment" in out.stdout
    assert "kept: milestone/1A (unmerged commits" in out.stdout
    out = project.run("clean", "--force")
    assert out.returncode == 0, out.stderr
    assert "not ours, kept: milestone/mine, orchestrator/experiment" in out.stdout
    assert "milestone/1A" in out.stdout.split("\n")[0] and "milestone/1B" in out.stdout.split("\n")[0]
    assert project.branches() == ["milestone/mine"]
    assert {b: project.git("rev-parse", b).strip() for b in users} == users
    assert not (project.root / ".worktree" / "1A").exists() and not (project.root / ".worktree" / "1B").exists()


def test_clean_dry_run_lists_and_changes_nothing(project: Project) -> None:
    failed_run_with_user_branches(project)
    before, refs_before = tree_hash(project.root), refs(project)
    worktrees_before = project.git("worktree", "list", "--porcelain")
    out = project.run("clean", "--force", "--dry-run", "--state")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("would remove: milestone/1A and its worktree")
    assert "would forget the state" in out.stdout
    assert "not ours, kept: milestone/mine, orchestrator/experiment" in out.stdout
    assert "nothing was changed" in out.stdout
    assert tree_hash(project.root) == before and refs(project) == refs_before
    assert project.git("worktree", "list", "--porcelain") == worktrees_before


def test_clean_keeps_its_branch_checked_out_in_a_users_worktree(project: Project, tmp_path: Path) -> None:
    failed_run_with_user_branches(project)
    project.git("worktree", "remove", "--force", str(project.root / ".worktree" / "1A"))
    mine = tmp_path / "look-at-1A"
    project.git("worktree", "add", "-q", str(mine), "milestone/1A")
    (mine / "my-notes.txt").write_text("reading 1A\n")
    tip = project.git("rev-parse", "milestone/1A")
    out = project.run("clean", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"kept: milestone/1A (checked out at {mine}" in out.stdout
    assert "fatal" not in out.stdout + out.stderr
    assert project.git("rev-parse", "milestone/1A") == tip
    assert (mine / "my-notes.txt").read_text() == "reading 1A\n"
    assert project.branches() == ["milestone/1A", "milestone/mine"]


def test_a_merged_users_milestone_branch_survives_runs_and_clean(project: Project) -> None:
    project.milestone("1A")
    project.configure(review={"enabled": False, "max_rounds": 1})
    project.commit_plan()
    assert project.run().returncode == 0
    project.git("branch", "milestone/1A")  # the user's, named like the runner's, merged (it is main)
    tip = project.git("rev-parse", "milestone/1A")
    assert project.run().returncode == 0  # the runner tidies merged milestones' branches: not this one
    out = project.run("clean", "--state")
    assert out.returncode == 0 and "not ours, kept: milestone/1A" in out.stdout
    assert project.git("rev-parse", "milestone/1A") == tip


def test_forgetting_the_state_keeps_the_record_of_the_runners_branches(project: Project) -> None:
    failed_run_with_user_branches(project)
    assert project.run("clean", "--state").returncode == 0
    out = project.run("clean", "--force")
    assert out.returncode == 0
    assert project.branches() == ["milestone/mine"]
    kept = subprocess.run(("git", "rev-parse", "--verify", "-q", "orchestrator/experiment"), cwd=project.root)
    assert kept.returncode == 0


def test_clean_with_a_base_branch_that_does_not_exist_is_a_usage_error(project: Project) -> None:
    failed_run_with_user_branches(project)
    project.configure(base_branch="develop")
    refs_before = refs(project)
    out = project.run("clean", "--force")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "develop" in out.stderr and "Traceback" not in out.stderr
    assert refs(project) == refs_before


def test_a_committed_edit_to_the_generated_tasks_file_is_kept_in_history_and_the_file_regenerated(
    project: Project,
) -> None:
    plan_of_two_stages(project)
    assert project.run("--stage", "1").returncode == 0
    tasks = project.root / "TASKS.md"
    tasks.write_text(tasks.read_text() + "\nMy committed note.\n")
    project.git("commit", "-qam", "a note in TASKS.md")
    noted = project.git("rev-parse", "HEAD").strip()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "My committed note." in committed(project, "TASKS.md", noted).decode()  # git keeps it
    assert render.is_unedited(tasks.read_text()) and project.git("status", "--porcelain").strip() == ""

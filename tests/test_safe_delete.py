"""The guarded delete (orchestrator_lib/safe_delete.py) refuses every removal that could hit the user's
repository, and the original bug — `{"worktree_dir": "."}` then `run` deleted the checkout — stays
fixed with a real run (issue 9 §1)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from bad_input import fingerprint
from conftest import REPO, Project, init_repo

from orchestrator_lib import leftovers, safe_delete
from orchestrator_lib.safe_delete import UnsafeDeleteError


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    (root / ".worktree" / "1A").mkdir(parents=True)
    (root / ".worktree" / "1A" / "work.txt").write_text("agent work\n")
    return root


def _refused(path: Path, root: Path, allowed: Path, why: str) -> None:
    before = fingerprint(root)
    with pytest.raises(UnsafeDeleteError, match=why):
        safe_delete.remove_tree(path, root=root, allowed_under=allowed)
    assert fingerprint(root) == before
    assert path.exists()


def test_refuses_the_repository_root(repo: Path) -> None:
    _refused(repo, repo, repo / ".worktree", "the repository")


def test_refuses_a_folder_holding_the_repository(repo: Path) -> None:
    _refused(repo.parent, repo, repo / ".worktree", "the repository")


def test_refuses_dot_git(repo: Path) -> None:
    _refused(repo / ".git", repo, repo, "git's own data")


def test_refuses_inside_dot_git(repo: Path) -> None:
    _refused(repo / ".git" / "refs", repo, repo / ".git", "git's own data")


def test_refuses_a_folder_holding_a_git_directory(repo: Path) -> None:
    nested = repo / ".worktree" / "nested"
    init_repo(nested)
    _refused(nested, repo, repo / ".worktree", "holds a .git directory")


def test_refuses_outside_the_allowed_folder(repo: Path) -> None:
    (repo / "src").mkdir()
    _refused(repo / "src", repo, repo / ".worktree", "not strictly inside")


def test_refuses_the_allowed_folder_itself(repo: Path) -> None:
    _refused(repo / ".worktree", repo, repo / ".worktree", "not strictly inside")


def test_refuses_when_the_allowed_folder_is_the_root(repo: Path) -> None:
    (repo / "src").mkdir()
    _refused(repo / "src", repo, repo, "not strictly inside")


def test_refuses_a_path_that_escapes_through_a_link(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / ".worktree" / "link").symlink_to(outside)
    _refused(repo / ".worktree" / "link", repo, repo / ".worktree", "not strictly inside")


def test_refuses_a_worktree_outside_the_folder(repo: Path) -> None:
    before = fingerprint(repo)
    with pytest.raises(UnsafeDeleteError):
        safe_delete.remove_worktree(repo, repo, allowed_under=repo / ".worktree")
    with pytest.raises(UnsafeDeleteError):
        safe_delete.remove_empty_dir(repo / ".git" / "branches", root=repo, allowed_under=repo)
    assert fingerprint(repo) == before


def test_removes_what_is_inside_the_folder(repo: Path) -> None:
    safe_delete.remove_tree(repo / ".worktree" / "1A", root=repo, allowed_under=repo / ".worktree")
    assert not (repo / ".worktree" / "1A").exists() and (repo / ".worktree").is_dir()


def test_the_leftovers_repair_aimed_at_the_root_deletes_nothing(repo: Path) -> None:
    """Defence in depth: even if a bad folder got past the config checks."""
    (repo / "empty").mkdir()
    (repo / "notes.txt").write_text("uncommitted\n")
    before = fingerprint(repo)
    with pytest.raises(UnsafeDeleteError):
        leftovers.repair(repo, repo, sleep=lambda _s: None, settle=1)
    assert fingerprint(repo) == before


def test_nothing_else_removes_directories() -> None:
    """Every rmtree, rmdir and `git worktree remove` of the product goes through safe_delete."""
    sources = [REPO / "orchestrator.py", REPO / "advanced.py", *sorted((REPO / "orchestrator_lib").glob("*.py"))]
    pattern = re.compile(r"rmtree|\.rmdir\(|\"worktree\", \"remove\"|os\.removedirs")
    offenders = [
        f"{path.name}:{n}"
        for path in sources
        if path.name != "safe_delete.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("value", [".", "", "..", "./", "x/..", ".git"])
def test_worktree_dir_that_would_delete_the_checkout_is_refused_by_a_real_run(project: Project, value: str) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(worktree_dir=value)
    (project.root / "uncommitted.txt").write_text("my work in progress\n")
    before = fingerprint(project.root)
    for args in (("--validate-only",), ("run",), ()):
        out = project.run(*args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "worktree_dir" in out.stderr and "orchestrator.config.json" in out.stderr
    assert fingerprint(project.root) == before
    assert subprocess.run(("git", "fsck", "--no-progress"), cwd=project.root, capture_output=True).returncode == 0
    assert project.agent_calls() == []

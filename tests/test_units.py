"""Unit tests of the lower layers, in-process and fast: git helpers, the state store, render, config,
presets, WorktreeManager, MilestoneValidator, stop control and the reporter. Real git repositories in
tmp_path; only clocks are injected."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import init_repo

import orchestrator_lib
from advanced import MilestoneValidator, WorktreeManager
from orchestrator_lib import git, presets, render, tasksfile
from orchestrator_lib.config import Config, ValidationConfig, load_config
from orchestrator_lib.errors import EXIT_FAILED, UsageError
from orchestrator_lib.notify import Announcer, Notifier
from orchestrator_lib.plan import Plan
from orchestrator_lib.reporter import Reporter
from orchestrator_lib.state import MilestoneState, StateStore, Status, update
from orchestrator_lib.stops import StopControl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    return root


def _git(root: Path, *args: str) -> str:
    return subprocess.run(("git", *args), cwd=root, check=True, capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- git helpers


def test_git_reads_branches_and_commits(repo: Path, tmp_path: Path) -> None:
    assert git.has_commits(repo) and git.current_branch(repo) == "main"
    assert git.rev_parse(repo, "HEAD") == _git(repo, "rev-parse", "HEAD")
    assert git.rev_parse(repo, "no-such-ref") is None
    assert git.branch_exists(repo, "main") and not git.branch_exists(repo, "milestone/1A")
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q", "-b", "main")
    assert not git.has_commits(empty)


def test_milestone_trailers_name_the_merge_commit_of_each_milestone(repo: Path) -> None:
    _git(repo, "commit", "-q", "--allow-empty", "-m", "Merge milestone 1A: one", "-m", "Milestone: 1A")
    first = _git(repo, "rev-parse", "HEAD")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "unrelated")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "Merge milestone 1B: two", "-m", "Milestone: 1B")
    assert git.milestone_trailers(repo, "main") == {"1A": first, "1B": _git(repo, "rev-parse", "HEAD")}


# ---------------------------------------------------------------- state store


def test_state_store_keeps_records_and_the_run(repo: Path) -> None:
    store = StateStore.open(repo)
    assert store is not None
    rec = MilestoneState(id="1A", stage=1, title="one")
    store.put(update(rec, status="running"))
    store.update_run(status="running", message="hello")
    store.close()
    again = StateStore.open(repo, readonly=True)
    assert again is not None
    assert again.get("1A") == update(rec, status="running")
    assert (again.run().status, again.run().message) == ("running", "hello")
    again.close()


def test_state_store_opened_read_only_creates_nothing(repo: Path) -> None:
    assert StateStore.open(repo, readonly=True) is None
    assert not (repo / ".orchestrator").exists()


# ---------------------------------------------------------------- render


@pytest.mark.parametrize(("minutes", "shown"), [(45, "45m"), (60, "1h"), (90, "1h30m"), (125, "2h05m")])
def test_estimates_read_as_hours_and_minutes(minutes: int, shown: str) -> None:
    assert render.format_minutes(minutes) == shown


@pytest.mark.parametrize(("seconds", "shown"), [(-3, "0s"), (9, "9s"), (75, "1m15s"), (3725, "1h02m")])
def test_durations_read_at_a_glance(seconds: float, shown: str) -> None:
    assert render.format_duration(seconds) == shown


def test_countdown_keeps_seconds() -> None:
    assert (render.countdown(59), render.countdown(3661)) == ("00m59s", "1h01m01s")


# ---------------------------------------------------------------- config and presets


def test_config_names_an_unknown_key_and_is_immutable(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.config.json"
    path.write_text(json.dumps({"max_paralel_tasks": 2}))
    with pytest.raises(UsageError) as raised:
        load_config(path, {})
    assert "max_paralel_tasks" in str(raised.value) and raised.value.exit_code == 2
    path.write_text(json.dumps({"max_parallel_tasks": 2}))
    config = load_config(path, {})
    assert config.max_parallel_tasks == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_parallel_tasks = 3  # type: ignore[misc]


def test_every_preset_the_config_accepts_has_a_record() -> None:
    assert Config().agent.preset in presets.PRESETS
    assert [p for p in presets.PRESETS if presets.get(p).executable] == ["claude", "codex", "aider", "gemini"]
    assert [p for p in presets.PRESETS if presets.get(p).resumes_session] == ["claude", "codex"]


# ---------------------------------------------------------------- WorktreeManager


def test_worktree_manager_makes_and_removes_a_milestone_worktree(repo: Path) -> None:
    manager = WorktreeManager(repo, repo / ".worktrees", "main", "TASKS.md")
    path = manager.ensure("1A", manager.base_commit(), reuse=False)
    assert path == repo / ".worktrees" / "1A" and (path / "README.md").exists()
    assert git.branch_exists(repo, "milestone/1A")
    manager.remove("1A", delete_branch=True)
    assert not path.exists() and not git.branch_exists(repo, "milestone/1A")


def test_worktree_manager_names_a_missing_base_branch(repo: Path) -> None:
    with pytest.raises(Exception, match="base branch `trunk` does not exist"):
        WorktreeManager(repo, repo / ".worktrees", "trunk", "TASKS.md").base_commit()


# ---------------------------------------------------------------- MilestoneValidator


def test_validator_runs_the_test_command_after_a_merge(repo: Path) -> None:
    passing = MilestoneValidator(ValidationConfig(test_command="git status"), {"PATH": _path()})
    failing = MilestoneValidator(ValidationConfig(test_command="git no-such-command"), {"PATH": _path()})
    assert passing.merged(repo) is None
    assert (failing.merged(repo) or "").startswith("`git no-such-command` failed:")
    assert MilestoneValidator(ValidationConfig(), {}).merged(repo) is None  # no test command: nothing to fail


def _path() -> str:
    return os.environ["PATH"]


# ---------------------------------------------------------------- stop control


def test_stop_requests_are_read_from_control_files(tmp_path: Path) -> None:
    now = [100.0]
    said: list[str] = []
    stops = StopControl(tmp_path / "control", said.append, clock=lambda: now[0])
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "stop-1B").touch()
    stops.check_requests()
    assert stops.for_milestone("1B").is_set() and not stops.is_set() and said == ["1B: stop requested"]
    (tmp_path / "control" / "stop-all").touch()
    stops.check_requests()  # read at most every 0.3 s
    assert not stops.is_set()
    now[0] += 0.5
    stops.check_requests()
    assert stops.is_set() and stops.for_milestone("2A").is_set()  # a later milestone is stopped too


# ---------------------------------------------------------------- reporter


def test_the_reporter_records_a_failure_writes_tasks_md_and_says_why(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = StateStore.open(repo)
    assert store is not None
    notifier = Notifier(Config().notify, repo)
    reporter = Reporter(Plan(()), store, tasksfile.TasksFile(repo, "TASKS.md", print), Announcer(notifier))
    try:
        assert reporter.fail("stage 1 not merged", "stage 1 not merged: 1A failed") == EXIT_FAILED
        assert (store.run().status, store.run().message) == ("failed", "stage 1 not merged")
        assert capsys.readouterr().out == "stage 1 not merged: 1A failed\n"
        assert (repo / "TASKS.md").exists()
    finally:
        notifier.close()
        store.close()


def test_python_dash_m_names_itself_in_help_and_version() -> None:
    """`python -m orchestrator_lib` runs orchestrator.py as a script; help and --version say how it started."""
    out = subprocess.run(
        (sys.executable, "-m", orchestrator_lib.__name__, "--version"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert (out.returncode, out.stdout) == (
        0,
        f"python -m {orchestrator_lib.__name__} {orchestrator_lib.__version__}\n",
    )


def test_a_status_is_stored_and_read_back_as_its_plain_value(repo: Path) -> None:
    store = StateStore.open(repo)
    assert store is not None
    store.put(MilestoneState(id="1A", stage=1, title="one", status=Status.MERGED))
    read = store.get("1A")
    store.close()
    assert read is not None and read.status == "merged" == Status.MERGED and f"{read.status:<8}|" == "merged  |"
    assert MilestoneState(id="1B", stage=1, title="two").status == "pending"

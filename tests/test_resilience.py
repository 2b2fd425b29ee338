"""Nothing lost: the lock, the state store, orphans, signals, restarts, stalls and a full disk.

Real repositories, real runner processes and real signals; the fault hook (orchestrator_lib/faults.py)
stands in for a full disk and for a runner that crashes, where nothing else can make them happen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Project, run_orchestrator
from live import agent_started, alive, milestone, output, running, start, wait_for

from orchestrator_lib import faults
from orchestrator_lib.errors import UsageError
from orchestrator_lib.lock import RunLock
from orchestrator_lib.state import SCHEMA_VERSION, MilestoneState, StateStore, StateWriteError

WAIT = 60.0


def two_stage_plan(p: Project) -> None:
    p.milestone("1A")
    p.milestone("1B")
    p.milestone("2A", deps=["1A", "1B"])
    p.commit_plan()


def state_db(p: Project) -> Path:
    return p.root / ".orchestrator" / "state.db"


def implement_calls(p: Project, mid: str) -> list[dict[str, object]]:
    return agent_started(p, mid, "implement")


def terminated(p: Project, mid: str) -> dict[str, object] | None:
    return next((c for c in p.agent_calls() if c["milestone"] == mid and c["event"] == "terminated"), None)


# ---------------------------------------------------------------- the lock


def test_a_second_runner_exits_2_naming_the_live_holder(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.script({"1A": {"implement": [{"hang": True}]}})
    with running(project) as runner:
        wait_for(lambda: implement_calls(project, "1A"), "the first runner's agent")
        second = project.run(timeout=WAIT)
        assert second.returncode == 2
        assert "another orchestrator is running in this project" in second.stderr
        assert f"pid {runner.pid} on {socket.gethostname()}" in second.stderr
        assert len(implement_calls(project, "1A")) == 1  # the second one started nothing
        watcher = project.run("status", "--json")  # readers are not locked out
        assert watcher.returncode == 0 and json.loads(watcher.stdout)["run"]["status"] == "running"


def test_a_stale_lock_is_taken_over_with_a_notice(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    gone = subprocess.Popen((sys.executable, "-c", "pass"))
    gone.wait(timeout=WAIT)
    lock = project.root / ".orchestrator" / "lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": time.time() - 60}))
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"notice: took over a stale lock left by pid {gone.pid} (no longer running)" in out.stdout
    assert not lock.exists()
    assert project.trailers() == ["1A"]


def test_a_half_written_lock_is_stale_too(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    lock = project.root / ".orchestrator" / "lock"
    lock.parent.mkdir()
    lock.write_text('{"pid": 12')  # a runner killed while writing it
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "notice: took over a stale lock left by pid ?" in out.stdout


def test_two_runners_starting_on_one_stale_lock_do_not_both_run(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.script({"1A": {"implement": [{"sleep": 1.5, "write": {"1A.txt": "a"}}]}})
    lock = project.root / ".orchestrator" / "lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "started": 0}))
    runners = [start(project.root, log=project.root.parent / f"runner-{n}.txt") for n in range(2)]
    codes = sorted(r.wait(timeout=WAIT) for r in runners)
    assert codes == [0, 2]
    assert len(implement_calls(project, "1A")) == 1
    assert project.trailers() == ["1A"]


def test_the_lock_in_process(tmp_path: Path) -> None:
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(UsageError, match=f"pid {os.getpid()} on "):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / "lock").exists()
    with RunLock(tmp_path) as again:
        assert again.notice == ""
        holder = json.loads((tmp_path / "lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]


def test_a_lock_from_another_machine_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text(json.dumps({"pid": 1, "host": "build-server-7", "started": 0}))
    with pytest.raises(UsageError, match=r"pid 1 on build-server-7.*if it is not running, delete"):
        RunLock(tmp_path).acquire()


# ---------------------------------------------------------------- the state store


def test_corrupt_state_is_a_clear_error_and_clean_state_starts_over_keeping_branches(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B", exit_checks=["(`test -f fixed.txt`)"])
    project.configure(review={"enabled": False, "max_rounds": 1})
    project.commit_plan()
    project.script({"1B": {"implement": [{"write": {"1B.txt": "b"}}, {"write": {"fixed.txt": "ok"}}]}})
    assert project.run(timeout=WAIT).returncode == 1  # 1A done, 1B failed: both branches kept
    state_db(project).write_bytes(b"\x00garbage, not a database" * 100)
    for name in ("state.db-wal", "state.db-shm"):
        (project.root / ".orchestrator" / name).unlink(missing_ok=True)
    expected = f"state is corrupt: {state_db(project)}; `clean --state` starts over, your branches are kept"
    for args in ((), ("--resume",), ("status",)):
        out = project.run(*args, timeout=WAIT)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert expected in out.stderr, out.stderr
    assert len(implement_calls(project, "1A")) == 1  # nothing ran

    assert project.run("clean", "--state").returncode == 0
    assert project.branches() == ["milestone/1A", "milestone/1B"]
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(project.trailers()) == ["1A", "1B"]


def test_state_from_a_newer_version_is_refused_and_left_alone(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    store = StateStore.open(project.root)
    assert store is not None
    store.close()
    with sqlite3.connect(state_db(project)) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    for args in ((), ("status",)):
        out = project.run(*args, timeout=WAIT)
        assert out.returncode == 2
        assert "state written by a newer version" in out.stderr and str(state_db(project)) in out.stderr
    with sqlite3.connect(state_db(project)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION + 1),
        )
    assert project.agent_calls() == []


def test_a_full_database_keeps_every_earlier_change(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    assert store is not None
    store.put(MilestoneState("1A", 1, "Alpha", status="done", attempts=2, commit="abc"))
    store.update_run(status="running", pid=123)
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(StateWriteError, match=r"database or disk is full.*Everything recorded before is kept"):
        store.put(MilestoneState("1B", 1, "Beta", reason="x" * 100_000))
    store.close()
    again = StateStore.open(tmp_path)
    assert again is not None
    assert again.milestones()["1A"].attempts == 2 and "1B" not in again.milestones()
    assert again.run().status == "running"
    assert again._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    again.close()


def test_a_full_disk_while_writing_state_fails_cleanly_and_resumes(project: Project) -> None:
    two_stage_plan(project)
    project.script({"2A": {"implement": [{"write": {"2A.txt": "c"}, "sleep": 3}]}})
    assert project.run("--stage", "1", timeout=WAIT).returncode == 0
    before = {m["id"]: m for m in project.status_json()["milestones"]}
    # The 6th write of the next run comes once 2A's agent is running (status, branch, role, pid ...).
    out = project.run(env={"ORCHESTRATOR_FAULT": "state-write:enospc:6"}, timeout=WAIT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot write the state" in out.stderr and "No space left on device" in out.stderr
    assert "--resume" in out.stderr
    assert not [c for c in project.agent_calls() if alive(int(c["pid"]))], "the agent was left running"
    assert not (project.root / ".orchestrator" / "lock").exists()
    after = {m["id"]: m for m in project.status_json()["milestones"]}
    for mid in ("1A", "1B"):
        assert after[mid] == before[mid]
    with sqlite3.connect(state_db(project)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    resumed = project.run("--resume", timeout=WAIT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert project.trailers() == ["2A", "1B", "1A"]


# ---------------------------------------------------------------- git is the truth


def test_state_deleted_mid_project_resumes_from_git_and_a_fresh_clone_goes_on(project: Project, tmp_path: Path) -> None:
    two_stage_plan(project)
    project.configure(review={"enabled": False, "max_rounds": 1})
    project.git("commit", "-qam", "config")
    project.script({"2A": {"implement": [{"exit": 1}, {"write": {"2A.txt": "c"}}]}})
    assert project.run(timeout=WAIT).returncode == 1  # stage 1 merged, 2A failed
    clone = tmp_path / "clone"
    subprocess.run(("git", "clone", "-q", str(project.root), str(clone)), check=True, timeout=WAIT)

    shutil.rmtree(project.root / ".orchestrator")
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.trailers() == ["2A", "1B", "1A"]
    assert len(implement_calls(project, "1A")) == 1 and len(implement_calls(project, "1B")) == 1
    assert {m["id"]: m["status"] for m in project.status_json()["milestones"]} == dict.fromkeys(
        ("1A", "1B", "2A"), "merged"
    )

    before = len(project.agent_calls())
    in_clone = run_orchestrator(clone, timeout=WAIT)
    assert in_clone.returncode == 0, in_clone.stdout + in_clone.stderr
    started = {c["milestone"] for c in project.agent_calls()[before:] if c["event"] == "start"}
    assert started == {"2A"}  # stage 1 is read from the trailers: the clone goes on at stage 2
    assert "stage 2: 2A" in in_clone.stdout and "stage 1" not in in_clone.stdout


# ---------------------------------------------------------------- orphans


@pytest.mark.parametrize("recorded", [True, False], ids=["pid-recorded", "killed-before-recording"])
def test_an_orphan_no_launch_describes_is_stopped_before_its_worktree_is_reused(
    project: Project, recorded: bool
) -> None:
    """Agents a resumed run can take over run on (tests/test_adoption.py); one it knows nothing of is stopped."""
    project.milestone("1A")
    project.commit_plan()
    project.script(
        {"1A": {"implement": [{"write": {"half.txt": "half"}, "hang": True}, {"write": {"1A.txt": "done"}}]}}
    )
    runner = start(project.root)
    wait_for(lambda: (project.root / ".worktree/1A/half.txt").exists(), "the agent's partial work")
    wait_for(lambda: milestone(project, "1A")["agent_pid"], "the agent's pid in the state")
    runner.kill()
    runner.wait(timeout=WAIT)
    orphan = int(implement_calls(project, "1A")[0]["pid"])
    assert alive(orphan) and milestone(project, "1A")["agent_pid"] == orphan
    shutil.rmtree(project.root / ".orchestrator" / "agents")  # as if started by a runner that kept no launches
    if not recorded:  # as if the kill had come before the runner recorded the agent's pid
        forget_agent_pid(project, "1A")

    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"1A: stopping agent pid {orphan} left running by the previous run" in out.stdout
    assert not alive(orphan)
    ended = next(c for c in project.agent_calls() if c["pid"] == orphan and c["event"] == "terminated")
    second = implement_calls(project, "1A")[1]
    assert float(ended["end"]) < float(second["start"])  # stopped before the worktree was reused
    assert "half.txt" in str(second["prompt"])  # its partial work is handed on
    assert project.show("half.txt") == "half" and project.show("1A.txt") == "done"


def forget_agent_pid(p: Project, mid: str) -> None:
    with sqlite3.connect(state_db(p)) as db:
        (data,) = db.execute("SELECT data FROM milestones WHERE id = ?", (mid,)).fetchone()
        record = {**json.loads(data), "agent_pid": 0, "agent_started": 0.0}
        db.execute("UPDATE milestones SET data = ? WHERE id = ?", (json.dumps(record), mid))


def test_a_recycled_pid_is_left_alone(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    stranger = subprocess.Popen(("sleep", "60"), start_new_session=True)
    try:
        store = StateStore.open(project.root)
        assert store is not None
        store.put(MilestoneState("1A", 1, "Milestone 1A", status="running", agent_pid=stranger.pid, agent_started=1.0))
        store.update_run(status="running")
        store.close()
        out = project.run("--resume", timeout=WAIT)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "stopping agent pid" not in out.stdout
        assert alive(stranger.pid)  # same pid, other start time: not ours
    finally:
        stranger.kill()
        stranger.wait(timeout=WAIT)


# ---------------------------------------------------------------- git left half done (runner killed with its git)


def killed_mid_stage(p: Project) -> None:
    """1A done and 1B hanging when the runner is SIGKILLed: both worktrees stay."""
    p.milestone("1A")
    p.milestone("1B")
    p.commit_plan()
    p.script({"1B": {"implement": [{"hang": True}, {"write": {"1B.txt": "b"}}]}})
    runner = start(p.root)
    wait_for(lambda: milestone(p, "1A")["status"] == "done" and implement_calls(p, "1B"), "1A done, 1B running")
    runner.kill()
    runner.wait(timeout=WAIT)
    os.killpg(int(implement_calls(p, "1B")[0]["pid"]), signal.SIGKILL)  # the agent went with it: a new attempt


def test_stale_git_locks_of_a_killed_git_are_removed(project: Project) -> None:
    killed_mid_stage(project)
    common = project.root / ".git"
    locks = [
        common / "worktrees" / "1B" / "index.lock",  # `git add` killed in 1B's worktree
        common / "refs" / "heads" / "milestone" / "1A.lock",  # a commit killed while moving its branch
        common / "index.lock",  # the checkout's own index: a fast-forward killed
    ]
    for lock in locks:
        lock.write_text("")
        os.utime(lock, (time.time() - 60, time.time() - 60))
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    for lock in locks:
        assert f"notice: removed the stale git lock {lock}" in out.stdout
    assert sorted(project.trailers()) == ["1A", "1B"]


def test_a_lock_is_kept_while_a_git_process_works_in_the_repository(project: Project) -> None:
    from orchestrator_lib import leftovers

    project.milestone("1A")
    project.commit_plan()
    lock = project.root / ".git" / "index.lock"
    lock.write_text("")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    busy = subprocess.Popen(("git", "cat-file", "--batch"), cwd=project.root, stdin=subprocess.PIPE)
    try:
        assert leftovers.repair(project.root, project.root / ".worktree", settle=0.5) == []
        assert lock.exists()
    finally:
        busy.kill()
        busy.wait(timeout=WAIT)
    naps: list[float] = []
    fresh = project.root / ".git" / "packed-refs.lock"
    fresh.write_text("")  # just made: it is given its moment before it counts as stale
    assert len(leftovers.repair(project.root, project.root / ".worktree", sleep=naps.append)) == 2
    assert naps and 1.0 < naps[0] <= leftovers.LOCK_MIN_AGE
    assert not lock.exists() and not fresh.exists()


def test_half_made_worktrees_are_made_again(project: Project) -> None:
    killed_mid_stage(project)
    admin = project.root / ".git" / "worktrees"
    (admin / "1A" / "locked").write_text("initializing")  # `git worktree add` killed before it finished
    (project.root / ".worktree" / "1B" / ".git").write_text("")  # killed while it wrote the .git file
    (project.root / ".worktree" / "1C").mkdir()  # killed before it registered the worktree
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    for mid in ("1A", "1B"):
        assert f"notice: removed the half-made worktree {project.root / '.worktree' / mid}" in out.stdout
    assert f"notice: removed the empty folder {project.root / '.worktree' / '1C'}" in out.stdout
    assert sorted(project.trailers()) == ["1A", "1B"]
    assert project.git("worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_fast_forward_killed_half_way_is_finished_not_blamed_on_the_user(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    (project.root / "notes.txt").write_text("v1\n")
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"write": {"1A.txt": "a\n", "notes.txt": "v2\n"}}]},
            "1B": {"implement": [{"write": {"1B.txt": "b\n"}}]},
        }
    )
    out = project.run(env={"ORCHESTRATOR_FAULT": "move-base:kill"}, timeout=WAIT)
    assert out.returncode == -9 and project.trailers() == []
    # What a fast-forward killed half-way leaves: some of the new files written, the branch unmoved.
    (project.root / "1A.txt").write_text("a\n")
    (project.root / "notes.txt").write_text("v2\n")
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(project.trailers()) == ["1A", "1B"]
    assert project.git("status", "--porcelain").strip() == ""
    assert (project.root / "notes.txt").read_text() == "v2\n"


# ---------------------------------------------------------------- signals


def test_sigterm_during_a_merge_leaves_the_base_untouched_and_resume_merges_once(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("1C")
    project.configure(validation={"test_command": "sleep 0.7"}, review={"enabled": False, "max_rounds": 1})
    project.commit_plan()
    base = project.git("rev-parse", "main").strip()
    runner = start(project.root)
    try:
        wait_for(lambda: "stage 1: merging" in output(project.root), "the merge", timeout=WAIT)
        wait_for(lambda: project.branches("orchestrator/integration"), "the integration branch")
        time.sleep(0.3)  # inside the tests that run after the first merge
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=WAIT) == 130, output(project.root)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert project.git("rev-parse", "main").strip() == base
    assert project.branches("orchestrator/*") == []
    assert not (project.root / ".worktree" / "_integration").exists()
    assert project.statuses() == dict.fromkeys(("1A", "1B", "1C"), "done")  # not blocked, not redone
    assert project.status_json()["run"]["status"] == "interrupted"
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.trailers() == ["1C", "1B", "1A"]
    assert all(len(implement_calls(project, m)) == 1 for m in ("1A", "1B", "1C"))


def test_sigterm_while_the_resolver_runs_interrupts_and_blocks_nothing(project: Project) -> None:
    (project.root / "shared.txt").write_text("original\n")
    project.milestone("1A")
    project.milestone("1B")
    project.configure(review={"enabled": False, "max_rounds": 1})
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"write": {"shared.txt": "from 1A\n"}}]},
            "1B": {"implement": [{"write": {"shared.txt": "from 1B\n"}}]},
            "*": {"resolve": [{"hang": True}, {"resolve": "both"}]},
        }
    )
    base = project.git("rev-parse", "main").strip()
    with running(project) as runner:
        wait_for(lambda: [c for c in project.agent_calls() if c["role"] == "resolve"], "the resolver")
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=WAIT) == 130, output(project.root)
    assert project.git("rev-parse", "main").strip() == base
    assert project.statuses() == {"1A": "done", "1B": "done"}  # interrupted, not blocked by a conflict
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.trailers() == ["1B", "1A"]
    assert project.show("shared.txt") == "from 1A\nfrom 1B\n"


def test_a_second_ctrl_c_kills_at_once(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.script({"1A": {"implement": [{"ignore_term": True, "hang": True}, {"write": {"1A.txt": "a"}}]}})
    runner = project.start()
    try:
        wait_for(lambda: milestone(project, "1A")["agent_pid"], "the agent")
        agent = int(implement_calls(project, "1A")[0]["pid"])
        runner.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert runner.poll() is None and alive(agent)  # the first waits out the grace period
        second = time.monotonic()
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=WAIT) == 130
        assert time.monotonic() - second < 2.0  # the grace period is 5 s
        assert "Ctrl-C again kills them at once" in runner.communicate(timeout=WAIT)[1]
        wait_for(lambda: not alive(agent), "the agent to die", timeout=5)
    finally:
        if runner.poll() is None:
            runner.kill()
    resumed = project.run("--resume", timeout=WAIT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert project.trailers() == ["1A"]


def test_stop_from_another_terminal_ends_the_run_like_sigterm(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.script({"1A": {"implement": [{"write": {"half.txt": "h"}, "hang": True}, {"write": {"1A.txt": "a"}}]}})
    with running(project) as runner:
        wait_for(lambda: milestone(project, "1A")["agent_pid"], "the agent")
        agent = int(implement_calls(project, "1A")[0]["pid"])
        stop = project.run("stop", timeout=WAIT)
        assert stop.returncode == 0 and f"pid {runner.pid}" in stop.stdout
        assert runner.wait(timeout=WAIT) == 130
    assert not alive(agent)
    assert project.statuses() == {"1A": "interrupted"}
    assert "| 1A | Milestone 1A | interrupted |" in (project.root / "TASKS.md").read_text()
    assert not (project.root / ".orchestrator" / "lock").exists()
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.show("half.txt") == "h"


def test_stop_one_milestone_is_heard_while_another_agent_chatters(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"chatter": [0.1, 12], "write": {"1A.txt": "a"}}]},
            "1B": {"implement": [{"hang": True}]},
        }
    )
    with running(project) as runner:
        wait_for(lambda: milestone(project, "1B")["agent_pid"], "1B's agent")
        asked = time.time()
        assert project.run("stop", "1B", timeout=WAIT).returncode == 0
        ended = wait_for(lambda: terminated(project, "1B"), "1B to be stopped")
        assert float(ended["end"]) - asked < 6.0  # not only once 1A is quiet (12 s of chatter; slack for a loaded CI)
        assert runner.wait(timeout=WAIT) == 1
    assert project.statuses() == {"1A": "done", "1B": "failed"}


def test_a_stop_request_of_an_earlier_run_is_not_carried_over(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    control = project.root / ".orchestrator" / "control"
    control.mkdir(parents=True)
    (control / "stop-1A").write_text("")  # left by `stop 1A` after that run had ended
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- crashes, stalls, context


def test_a_crashed_agent_is_retried_with_backoff(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(
        retry_attempts=2, rate_limit={"grace_seconds": 0, "backoff_initial_seconds": 0.4, "backoff_max_seconds": 0.6}
    )
    project.script({"1A": {"implement": [{"exit": 3}, {"exit": 3}, {"write": {"1A.txt": "a"}}]}})
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    starts = [float(c["start"]) for c in implement_calls(project, "1A")]
    ends = [float(c["end"]) for c in project.agent_calls() if c["milestone"] == "1A" and c["event"] == "end"]
    assert len(starts) == 3
    assert all(later - end >= 0.4 for end, later in zip(ends, starts[1:], strict=False))  # backed off
    assert milestone(project, "1A")["attempts"] == 3


def test_the_crash_count_is_kept_across_resumes(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(retry_attempts=2)
    project.script({"1A": {"implement": [{"exit": 3}, {"sleep": 1, "exit": 3}, {"exit": 3}]}})  # the last repeats
    runner = start(project.root)
    wait_for(lambda: len(implement_calls(project, "1A")) == 2, "the second attempt")
    runner.kill()  # crash 1 is recorded; attempt 2 outlives the runner and is taken over
    runner.wait(timeout=WAIT)
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 1, out.stdout + out.stderr
    # crash 2 is retried (2 <= retry_attempts), crash 3 is not: 3 runs in all, not 4
    assert len(implement_calls(project, "1A")) == 3
    record = milestone(project, "1A")
    assert record["status"] == "failed" and record["attempts"] == 3


def test_a_stall_starts_a_fresh_attempt_told_what_is_in_the_worktree(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(agent={"idle_timeout_minutes": 0.02})  # 1.2 s without output
    project.script({"1A": {"implement": [{"write": {"part.txt": "p"}, "hang": True}, {"write": {"1A.txt": "a"}}]}})
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    first, second = implement_calls(project, "1A")
    assert "part.txt" in str(second["prompt"]) and "no output for 0.02 min" in str(second["prompt"])
    assert "part.txt" not in str(first["prompt"])
    assert project.show("part.txt") == "p" and project.show("1A.txt") == "a"
    assert "stalled (no output for 0.02 min" in (project.root / "logs" / "1A.log").read_text()


def test_stalls_are_bounded_by_recovery_max_attempts(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(agent={"idle_timeout_minutes": 0.02}, recovery={"max_attempts": 1}, retry_attempts=3)
    project.script({"1A": {"implement": [{"hang": True}]}})
    out = project.run(timeout=WAIT)
    assert out.returncode == 1
    assert len(implement_calls(project, "1A")) == 2
    assert milestone(project, "1A")["reason"].startswith("stalled: no output for 0.02 min")


def test_context_exhaustion_stops_the_agent_at_once_and_a_fresh_one_goes_on(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.script(
        {
            "1A": {
                "implement": [
                    {"write": {"part.txt": "p"}, "print_after": ["Context limit reached"], "hang": True},
                    {"write": {"1A.txt": "a"}},
                ]
            }
        }
    )
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    first, second = implement_calls(project, "1A")
    stopped = next(c for c in project.agent_calls() if c["pid"] == first["pid"] and c["event"] == "terminated")
    assert float(stopped["end"]) - float(first["start"]) < 10  # not left to the idle watchdog (60 s)
    assert "context exhausted" in str(second["prompt"]) and "part.txt" in str(second["prompt"])
    assert project.show("part.txt") == "p"


def test_context_recoveries_are_bounded(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(recovery={"max_attempts": 1})
    project.script({"1A": {"implement": [{"write": {"x.txt": "x"}, "print_after": ["context window exceeded"]}]}})
    out = project.run(timeout=WAIT)
    assert out.returncode == 1
    assert len(implement_calls(project, "1A")) == 2
    assert milestone(project, "1A")["reason"] == "context: context window exceeded"


# ---------------------------------------------------------------- disk


def test_no_worktree_is_made_while_the_disk_is_short(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(monitor={"min_free_disk_gb": 10**9, "max_wait_minutes": 0.01, "interval_seconds": 0.1})
    out = project.run(timeout=WAIT)
    assert out.returncode == 1
    assert not (project.root / ".worktree" / "1A").exists() and project.branches() == []
    assert project.agent_calls() == []
    assert "below monitor.min_free_disk_gb" in milestone(project, "1A")["reason"]


def test_a_worktree_waits_for_disk_with_an_injected_probe(project: Project) -> None:
    from advanced import MilestoneValidator, RateLimitManager, SystemMonitor, WorktreeManager
    from orchestrator_lib.config import load_config
    from orchestrator_lib.pipeline import Held, Job, Services, run_milestone
    from orchestrator_lib.plan import load_plan

    project.milestone("1A")
    project.commit_plan()
    config = load_config(project.root / "orchestrator.config.json", {})
    worktree = project.root / ".worktree" / "1A"
    seen: list[bool] = []

    class Probe:
        def cpu_percent(self) -> float:
            return 0.0

        def memory_percent(self) -> float:
            return 0.0

        def disk_free_gb(self, path: Path) -> float:
            seen.append(worktree.exists())
            return 0.5 if len(seen) <= 3 else 50.0

    short_of_disk = dataclasses.replace(config.monitor, min_free_disk_gb=1.0)
    monitor = SystemMonitor(short_of_disk, project.root, probe=Probe(), sleep=lambda seconds: False)
    events: list[object] = []
    stops: dict[str, threading.Event] = {}
    services = Services(
        config=config,
        root=project.root,
        rate_limits=RateLimitManager(config),
        monitor=monitor,
        validator=MilestoneValidator(config.validation, os.environ),
        worktrees=WorktreeManager(project.root, project.root / ".worktree", "main", "TASKS.md"),
        agent_env=os.environ,
        log_dir=project.root / "logs",
        prompt_dir=project.root / ".orchestrator" / "prompts",
        stop_for=lambda mid: stops.setdefault(mid, threading.Event()),
        emit=events.append,
        clock=time.time,
    )
    plan, _ = load_plan(project.root / "milestones", project.root)
    base = project.git("rev-parse", "main").strip()
    result = run_milestone(services, Job(plan.milestones[0], base, None, False))
    assert result.status == "done", result
    assert seen[:3] == [False, False, False]  # held while short, and no worktree meanwhile
    assert any(isinstance(e, Held) and "free disk 0.5 GB" in e.reason for e in events)
    assert worktree.exists()


# ---------------------------------------------------------------- ./orchestrator.sh


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv for orchestrator.sh that uses this interpreter's packages: nothing is downloaded."""
    import site

    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run((sys.executable, "-m", "venv", "--without-pip", str(path)), check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        (str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"),
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    ).stdout.strip()
    packages = [*site.getsitepackages(), site.getusersitepackages()]
    Path(purelib, "host-packages.pth").write_text("\n".join(packages) + "\n")
    stamp = subprocess.run(
        ("sh", "-c", 'cat requirements.txt requirements-dev.txt 2>/dev/null | cksum | cut -d" " -f1'),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    ).stdout.strip()
    (path / f".installed-requirements.txt-{stamp}").touch()  # what `setup` checks before pip
    return path


def launcher(
    project: Project, venv: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "NO_COLOR": "1",
        "ORCHESTRATOR_VENV": str(venv),
        "ORCHESTRATOR_RESTART_PAUSE": "0.2",
        **(env or {}),
    }
    return subprocess.run(
        (str(REPO / "orchestrator.sh"), *args),
        cwd=project.root,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        stdin=subprocess.DEVNULL,
    )


def crashing_agent(project: Project, **config: object) -> None:
    """The first implement run SIGKILLs the runner that started it: a crash from outside."""
    project.milestone("1A")
    project.configure(retry_attempts=2, **config)
    project.commit_plan()
    first = {"write": {"half.txt": "h"}, "kill_parent": True}
    project.script({"1A": {"implement": [first, {"write": {"1A.txt": "a"}}]}})


def runner_starts(result: subprocess.CompletedProcess[str]) -> int:
    return result.stderr.count("restarting with --resume") + 1


def test_run_restarts_a_runner_that_was_killed(project: Project, venv: Path) -> None:
    crashing_agent(project)
    out = launcher(project, venv, "run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "runner exited with 137; restarting with --resume in 0.2s (1/2)" in out.stderr
    assert project.trailers() == ["1A"]
    # the agent finished after its runner died: its work is used, it is not started again
    assert project.show("half.txt") == "h" and len(implement_calls(project, "1A")) == 1


def test_run_restarts_a_runner_that_crashed_with_exit_3(project: Project, venv: Path, tmp_path: Path) -> None:
    project.milestone("1A")
    project.configure(retry_attempts=2)
    project.commit_plan()
    env = {"ORCHESTRATOR_FAULT": "runner-start:crash", "ORCHESTRATOR_FAULT_ONCE": str(tmp_path / "crashed")}
    out = launcher(project, venv, "run", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "InjectedCrashError: injected fault at runner-start" in out.stderr
    assert "runner exited with 3; restarting with --resume" in out.stderr
    assert runner_starts(out) == 2
    assert project.trailers() == ["1A"]


def test_run_gives_up_after_retry_attempts_restarts(project: Project, venv: Path) -> None:
    project.milestone("1A")
    project.configure(retry_attempts=2)
    project.commit_plan()
    out = launcher(project, venv, "run", env={"ORCHESTRATOR_FAULT": "runner-start:crash"})
    assert out.returncode == 3
    assert runner_starts(out) == 3 and "(2/2)" in out.stderr
    assert project.trailers() == []


def test_run_does_not_restart_after_a_usage_error(project: Project, venv: Path) -> None:
    project.milestone("1A")
    project.configure(retry_attempts=2)
    project.commit_plan()
    state_db(project).parent.mkdir()
    state_db(project).write_bytes(b"not a database" * 100)
    out = launcher(project, venv, "run")
    assert out.returncode == 2
    assert out.stderr.count("state is corrupt") == 1 and "restarting" not in out.stderr


@pytest.mark.parametrize(
    ("verb", "env", "config"),
    [
        ("single", {}, {}),
        ("run", {"AUTO_RESUME": "false"}, {}),
        ("run", {}, {"auto_resume": False}),
    ],
)
def test_no_restart_when_auto_resume_is_off(
    project: Project, venv: Path, verb: str, env: dict[str, str], config: dict[str, bool]
) -> None:
    crashing_agent(project, **config)
    out = launcher(project, venv, verb, env=env)
    assert out.returncode in (-9, 137), out.stdout + out.stderr
    assert "restarting" not in out.stderr
    assert len(implement_calls(project, "1A")) == 1
    assert project.trailers() == []


def test_sigterm_to_the_launcher_stops_the_run_without_a_restart(project: Project, venv: Path) -> None:
    project.milestone("1A")
    project.configure(retry_attempts=2)
    project.commit_plan()
    project.script({"1A": {"implement": [{"hang": True}]}})
    env = {"ORCHESTRATOR_VENV": str(venv), "ORCHESTRATOR_RESTART_PAUSE": "0.2"}
    launcher_process = project.start(str(REPO / "orchestrator.sh"), "run", env=env)
    try:
        wait_for(lambda: milestone(project, "1A")["agent_pid"], "the agent")
        agent = int(implement_calls(project, "1A")[0]["pid"])
        launcher_process.send_signal(signal.SIGTERM)
        assert launcher_process.wait(timeout=WAIT) == 130
    finally:
        if launcher_process.poll() is None:
            launcher_process.kill()
    assert "restarting" not in launcher_process.communicate(timeout=WAIT)[1]
    assert not alive(agent)
    assert project.statuses() == {"1A": "interrupted"}


# ---------------------------------------------------------------- the fault hook itself


def test_faults_fire_only_when_asked_and_only_once_with_a_marker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    faults.hit("merge")  # not set: nothing
    monkeypatch.setenv("ORCHESTRATOR_FAULT", "merge:crash:2")
    monkeypatch.setattr(faults, "_hits", faults.collections.Counter())
    faults.hit("merge")
    with pytest.raises(faults.InjectedCrashError):
        faults.hit("merge")
    monkeypatch.setenv("ORCHESTRATOR_FAULT", "move-base:enospc")
    monkeypatch.setenv("ORCHESTRATOR_FAULT_ONCE", str(tmp_path / "once"))
    with pytest.raises(OSError, match="No space left"):
        faults.hit("move-base")
    monkeypatch.setattr(faults, "_hits", faults.collections.Counter())
    faults.hit("move-base")  # the marker exists: not again


@pytest.fixture(autouse=True)
def _no_stray_processes(project: Project) -> Iterator[None]:
    yield
    for call in project.agent_calls():
        if call["event"] == "start" and alive(int(call["pid"])):
            os.killpg(int(call["pid"]), signal.SIGKILL)

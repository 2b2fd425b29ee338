"""A runner crash costs no agent work: agents outlive a SIGKILLed runner and `--resume` adopts them.

Each agent appends its deliverable (a second start would show as a second line) and says so in
the fake agent's log (every start is a line there). The three cases of a resume: the agent still
runs (adopted), it finished while no runner was there (its result is used), it is gone without
an exit status (a new attempt).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Project
from live import agent_started, alive, milestone, start, wait_for

from orchestrator_lib import launches

WAIT = 60.0


def appending_agent(p: Project) -> Path:
    """1A's implement waits for the returned file to appear, then appends its line and ends."""
    go = p.root.parent / "go"
    p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    p.commit_plan()
    p.script({"1A": {"implement": [{"wait_for_file": [str(go), WAIT], "append": {"1A.txt": "work of 1A\n"}}]}})
    return go


def crash_while_the_agent_runs(p: Project) -> int:
    """Start a run, SIGKILL the runner alone once 1A's agent runs; the agent's pid."""
    runner = start(p.root)
    pid = int(wait_for(lambda: agent_started(p, "1A"), "1A's agent")[0]["pid"])
    wait_for(lambda: milestone(p, "1A")["agent_pid"] == pid, "the agent's pid in the state")
    runner.kill()
    runner.wait(timeout=WAIT)
    assert alive(pid), "the agent outlives the runner"
    return pid


def assert_landed_once(p: Project) -> None:
    assert p.trailers() == ["1A"]
    assert p.show("1A.txt") == "work of 1A\n", "the agent's work is in the base branch once"


def test_a_running_agent_is_adopted_not_stopped_and_status_shows_it(project: Project) -> None:
    go = appending_agent(project)
    pid = crash_while_the_agent_runs(project)
    resumed = start(project.root, "--resume", log=project.root.parent / "resumed.txt")
    try:
        wait_for(lambda: "taking it over" in output_of(project, "resumed.txt"), "the adoption", WAIT)
        wait_for(lambda: milestone(project, "1A")["agent_pid"] == pid, "status to show the adopted agent", WAIT)
        assert milestone(project, "1A")["status"] == "running"
        go.write_text("")
        assert resumed.wait(timeout=WAIT) == 0, output_of(project, "resumed.txt")
    finally:
        if resumed.poll() is None:
            resumed.kill()
    printed = output_of(project, "resumed.txt")
    assert f"1A: agent pid {pid} of the previous run runs on; taking it over" in printed
    assert "stopping agent" not in printed
    assert len(agent_started(project, "1A")) == 1, "started once"
    assert_landed_once(project)
    assert "took over the agent the previous run started" in (project.root / "logs" / "1A.log").read_text()


def test_the_wall_watchdog_counts_from_the_adopted_agents_real_start(project: Project) -> None:
    project.milestone("1A")
    project.configure(retry_attempts=0, agent={"timeout_minutes": 0.1})  # 6 s in all
    project.commit_plan()
    project.script({"1A": {"implement": [{"chatter": [0.2, 60]}]}})  # busy, never done
    crash_while_the_agent_runs(project)
    time.sleep(4)
    started = time.monotonic()
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - started < 5.5, "cut 6 s after the agent's start, not after the resume"
    assert "timeout" in milestone(project, "1A")["reason"]


def test_an_agent_that_finished_while_no_runner_was_there_is_not_started_again(project: Project) -> None:
    go = appending_agent(project)
    pid = crash_while_the_agent_runs(project)
    go.write_text("")
    wait_for(lambda: not alive(pid), "the agent to finish on its own")
    status = launch_status(project, "1A-implement-1")
    assert status.finished and status.exit_code == 0
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "taking it over" not in out.stdout  # nothing ran any more
    assert len(agent_started(project, "1A")) == 1, "started once"
    assert_landed_once(project)


def test_an_agent_gone_without_an_exit_status_gets_a_new_attempt(project: Project) -> None:
    appending_agent(project)
    project.script(
        {"1A": {"implement": [{"write": {"half.txt": "h"}, "sleep": 30}, {"write": {"1A.txt": "work of 1A\n"}}]}}
    )
    pid = crash_while_the_agent_runs(project)
    status = launch_status(project, "1A-implement-1")
    kill_whole_group(status)  # what a reboot or a stopped container does
    wait_for(lambda: not alive(pid) and not alive(status.wrapper_pid), "the agent and its wrapper to be gone")
    assert not launch_status(project, "1A-implement-1").finished
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    _, second = agent_started(project, "1A")
    assert "half.txt" in str(second["prompt"])  # its work so far is handed on
    assert_landed_once(project)
    assert project.show("half.txt") == "h"


def test_stop_still_stops_the_agent(project: Project) -> None:
    appending_agent(project)
    runner = start(project.root)
    pid = int(wait_for(lambda: agent_started(project, "1A"), "1A's agent")[0]["pid"])
    wrapper = launch_status_when_written(project, "1A-implement-1").wrapper_pid
    runner.send_signal(signal.SIGINT)  # Ctrl-C
    assert runner.wait(timeout=WAIT) == 130
    assert not alive(pid) and not alive(wrapper)
    assert not launch_status(project, "1A-implement-1").finished  # stopped: a resume starts it again


def test_the_wrapper_masks_secrets_in_the_log(project: Project) -> None:
    secret = "s3cr3t-value-from-dotenv"
    (project.root / ".env").write_text(f"SOME_SETTING={secret}\n")
    project.milestone("1A")
    project.commit_plan()
    project.script({"1A": {"implement": [{"print": [f"I saw {secret} here"], "write": {"1A.txt": "a"}}]}})
    out = project.run(timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    log = (project.root / "logs" / "1A.log").read_text()
    assert "I saw [value from .env] here" in log and secret not in log


def output_of(p: Project, name: str) -> str:
    path = p.root.parent / name
    return path.read_text() if path.exists() else ""


def launch_status(p: Project, key: str) -> launches.Status:
    path = p.root / ".orchestrator" / "agents" / f"{key}.json"
    launch = launches.read_launch(path)
    assert launch is not None
    status = launches.read_status(path, launch)
    assert status is not None
    return status


def launch_status_when_written(p: Project, key: str) -> launches.Status:
    path = p.root / ".orchestrator" / "agents" / f"{key}.json"
    return wait_for(lambda: _status_of(path), f"the status of {key}")


def _status_of(path: Path) -> launches.Status | None:
    launch = launches.read_launch(path)
    return launches.read_status(path, launch) if launch else None


def kill_whole_group(status: launches.Status) -> None:
    for pid in (status.wrapper_pid, status.agent_pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _no_stray_processes(project: Project) -> Iterator[None]:
    yield
    for path in (project.root / ".orchestrator" / "agents").glob("*.status.json"):
        status = _status_of(path.with_name(path.name.replace(".status.json", ".json")))
        if status is not None:
            kill_whole_group(status)


def test_the_wrapper_runs_in_a_session_of_its_own(project: Project) -> None:
    appending_agent(project)
    runner = start(project.root)
    try:
        status = launch_status_when_written(project, "1A-implement-1")
        wrapper, agent = psutil.Process(status.wrapper_pid), psutil.Process(status.agent_pid)
        assert os.getsid(wrapper.pid) == wrapper.pid != os.getsid(runner.pid)
        assert os.getpgid(agent.pid) == agent.pid and agent.ppid() == wrapper.pid
        assert "orchestrator_lib.agent_wrapper" in wrapper.cmdline()
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            runner.kill()


def test_a_runner_killed_between_recording_a_launch_and_starting_it_starts_the_agent_once(project: Project) -> None:
    project.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    project.commit_plan()
    project.script({"1A": {"implement": [{"append": {"1A.txt": "work of 1A\n"}}]}})
    out = project.run(env={"ORCHESTRATOR_FAULT": "agent-launch:kill"}, timeout=WAIT)
    assert out.returncode == -9 and agent_started(project, "1A") == []
    resumed = project.run("--resume", timeout=WAIT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(agent_started(project, "1A")) == 1
    assert_landed_once(project)

"""Milestones as tasks on a real two-node Ray cluster on this machine (executor.kind "ray").

Which node ran an agent is read from the agent's own environment (RAY_RAYLET_PID, set by Ray in
every worker and inherited by the agent), never from the runner's word. The cluster is started once
for this module's tests (they share one xdist group) and always stopped, even on failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

pytestmark = pytest.mark.xdist_group("ray")


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed: pip install -r requirements-ray.txt (CI must run the Ray tests)")
        pytest.skip("Ray is not installed (pip install -r requirements-ray.txt)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    _require_ray()
    import ray_cluster

    started = ray_cluster.start()
    try:
        yield started
    finally:
        started.stop()


def ray_project(project: Project, cluster: Any, tmp_path: Path, **overrides: Any) -> Path:
    remote = tmp_path / "remote.git"
    subprocess.run(("git", "init", "-q", "--bare", str(remote)), check=True)
    executor = {
        "kind": "ray",
        "address": cluster.address,
        "remote": remote.as_uri(),
        "work_dir": str(tmp_path / "w"),
        "resources": {"CPU": 1, "slot": 1},  # one per node: 1A and 1B at once are on different nodes
    }
    executor.update(overrides.pop("executor", {}))
    project.configure(executor=executor, **overrides)
    return remote


def node_of(call: dict[str, Any], cluster: Any) -> str:
    pids = {cluster.head.raylet().pid: "head", cluster.second.raylet().pid: "second"}
    assert call["raylet_pid"], f"agent of {call['milestone']} did not run in a Ray worker"
    return pids[int(call["raylet_pid"])]


def starts(project: Project) -> list[dict[str, Any]]:
    return [c for c in project.agent_calls() if c["event"] == "start"]


def test_a_two_stage_plan_runs_each_milestone_on_a_worker(project: Project, cluster: Any, tmp_path: Path) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("2A", deps=["1A", "1B"])
    project.commit_plan()
    ray_project(project, cluster, tmp_path)
    project.script({m: {"implement": [{"sleep": 2, "write": {f"{m}.txt": m}}]} for m in ("1A", "1B", "2A")})

    done = project.run(timeout=240)

    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(project.trailers()) == ["1A", "1B", "2A"]  # each merged exactly once
    nodes = {c["milestone"]: node_of(c, cluster) for c in starts(project) if c["role"] == "implement"}
    assert set(nodes) == {"1A", "1B", "2A"}
    assert {nodes["1A"], nodes["1B"]} == {"head", "second"}
    status = project.status_json()
    assert all(m["node"] for m in status["milestones"])
    shown = project.run("status").stdout
    assert all(f"node {m['node'][:8]}" in shown for m in status["milestones"])


def _kill_stray_agents(project: Project) -> None:
    """An agent whose node died runs on (it is detached, like every agent): end it, by its pid."""
    import psutil

    for call in starts(project):
        try:
            p = psutil.Process(call["pid"])
            if any("fake_agent" in part for part in p.cmdline()):
                p.kill()
        except psutil.Error:
            continue


def test_a_node_that_dies_mid_task_is_resubmitted_and_merged_once(
    project: Project, cluster: Any, tmp_path: Path
) -> None:
    import ray_cluster

    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    ray_project(project, cluster, tmp_path)  # retry_attempts 0: a lost node is still resubmitted once
    first = {"chatter": [0.5, 10], "write": {}}  # prints "working N" every half second
    slow = {m: {"implement": [{**first, "write": {f"{m}.txt": "first"}}, {"write": {f"{m}.txt": "again"}}]}
            for m in ("1A", "1B")}  # fmt: skip
    project.script(slow)
    runner = project.start()
    try:
        ray_cluster.wait_for(lambda: len(starts(project)) == 2, 120, "both agents to start")
        victim = next(c["milestone"] for c in starts(project) if node_of(c, cluster) == "second")
        streamed = project.root / "logs" / f"{victim}.log"  # the runner's copy, while the agent runs
        ray_cluster.wait_for(lambda: streamed.exists() and "working 1" in streamed.read_text(), 60, "streamed output")
        cluster.second.raylet().kill()
        out, err = runner.communicate(timeout=240)
    finally:
        runner.kill()
        _kill_stray_agents(project)
        cluster.replace_second()

    assert runner.returncode == 0, out + err
    assert sorted(project.trailers()) == ["1A", "1B"]  # merged exactly once each
    runs = [c for c in starts(project) if c["milestone"] == victim and c["role"] == "implement"]
    assert [r.get("raylet_pid") is not None for r in runs] == [True, True]
    assert int(runs[1]["raylet_pid"]) == cluster.head.raylet().pid  # the head node took it over
    record = next(m for m in project.status_json()["milestones"] if m["id"] == victim)
    assert record["status"] == "merged"
    assert project.show(f"{victim}.txt") == "again"
    assert "resubmitting from the last pushed state (crash 1)" in (project.root / "logs" / f"{victim}.log").read_text()


def test_a_usage_limit_on_one_worker_holds_dispatch_on_both_nodes(
    project: Project, cluster: Any, tmp_path: Path
) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    ray_project(project, cluster, tmp_path)
    reset = int(time.time()) + 25  # after 1B's implement ends, so its review is a start the limit holds
    limit = {"print": [f"Claude AI usage limit reached|{reset}"], "exit": 1}
    project.script(
        {
            "1A": {"implement": [limit, {"write": {"1A.txt": "A"}}]},
            "1B": {"implement": [{"sleep": 6, "write": {"1B.txt": "B"}}]},
        }
    )

    done = project.run(timeout=240)

    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(project.trailers()) == ["1A", "1B"]
    calls = starts(project)
    first_two = [c for c in calls if c["role"] == "implement"][:2]
    later = [c for c in calls if c not in first_two]
    assert {c["milestone"] for c in first_two} == {"1A", "1B"}
    assert later and all(c["start"] >= reset for c in later), [(c["milestone"], c["role"], c["start"]) for c in later]
    assert {node_of(c, cluster) for c in later} == {"head", "second"}  # held on both nodes
    a_runs = [c for c in calls if c["milestone"] == "1A" and c["role"] == "implement"]
    assert len(a_runs) == 2 and a_runs[0]["raylet_pid"] == a_runs[1]["raylet_pid"]  # resubmitted to its node
    assert project.paused_until() == reset


def test_a_runner_killed_mid_task_is_cancelled_and_resubmitted_on_resume(
    project: Project, cluster: Any, tmp_path: Path
) -> None:
    import ray_cluster

    project.milestone("1A")
    project.commit_plan()
    ray_project(project, cluster, tmp_path)
    project.script({"1A": {"implement": [{"sleep": 30, "write": {"1A.txt": "first"}}, {"write": {"1A.txt": "A"}}]}})
    runner = project.start()
    try:
        ray_cluster.wait_for(lambda: len(starts(project)) == 1, 120, "the agent to start")
        runner.kill()  # SIGKILL: Ray ends the dead driver's task; the agent, detached, runs on
        runner.communicate(timeout=30)

        again = project.run("--resume", timeout=240)
    finally:
        runner.kill()
        _kill_stray_agents(project)

    assert again.returncode == 0, again.stdout + again.stderr
    assert project.trailers() == ["1A"]
    implement = [c for c in project.agent_calls() if c["role"] == "implement"]
    first, second = (c for c in implement if c["event"] == "start")  # resubmitted once, on the same node
    assert first["raylet_pid"] == second["raylet_pid"]
    ended = {c["pid"]: c["event"] for c in implement if c["event"] != "start"}
    assert ended[first["pid"]] == "terminated"  # the lost task's agent was stopped, not left beside the new one
    assert ended[second["pid"]] == "end"
    assert project.show("1A.txt") == "A"


def run_validate(project: Project, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return project.run("--validate-only", env=env, timeout=180)


def test_validate_refuses_ray_without_a_remote(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(executor={"kind": "ray"})

    out = run_validate(project)

    assert out.returncode == 2
    assert "`executor.remote` must be set" in out.stderr


def test_validate_says_when_the_remote_is_unreachable(project: Project, tmp_path: Path) -> None:
    project.milestone("1A")
    project.commit_plan()
    project.configure(executor={"kind": "ray", "remote": (tmp_path / "nowhere.git").as_uri()})

    out = run_validate(project)

    assert out.returncode == 2
    assert "executor.remote" in out.stderr and "not reachable from this machine" in out.stderr
    assert "does not appear to be a git repository" in out.stderr  # git's reason, not only its advice
    assert not (project.root / ".orchestrator").exists()  # nothing written


def test_an_address_that_does_not_answer_is_exit_2_at_once(project: Project, tmp_path: Path) -> None:
    # ray.init retries a silent address for minutes and does not hear a stop: refuse before starting.
    project.milestone("1A")
    project.commit_plan()
    remote = tmp_path / "remote.git"
    subprocess.run(("git", "init", "-q", "--bare", str(remote)), check=True)
    with socket.socket() as unused:  # a port nobody listens on: bound, never listening
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
        project.configure(executor={"kind": "ray", "remote": remote.as_uri(), "address": address})

        for out in (run_validate(project), project.run(timeout=60)):
            assert out.returncode == 2, out.stdout + out.stderr
            assert f"executor.address '{address}' does not answer" in out.stderr
    assert not (project.root / ".orchestrator" / "state.db").exists()


def test_ray_not_installed_is_exit_2_naming_the_requirements_file(project: Project, tmp_path: Path) -> None:
    project.milestone("1A")
    project.commit_plan()
    remote = tmp_path / "remote.git"
    subprocess.run(("git", "init", "-q", "--bare", str(remote)), check=True)
    project.configure(executor={"kind": "ray", "remote": remote.as_uri()})
    shadow = tmp_path / "no-ray" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray (shadowed by the test)')\n")
    env = {"PYTHONPATH": str(shadow.parent)}

    for out in (run_validate(project, env), project.run(env=env, timeout=60)):
        assert out.returncode == 2, out.stdout + out.stderr
        assert "requirements-ray.txt" in out.stderr and "Ray is not installed" in out.stderr


def test_validate_runs_a_check_on_a_worker(project: Project, cluster: Any, tmp_path: Path) -> None:
    project.milestone("1A")
    project.commit_plan()
    ray_project(project, cluster, tmp_path)
    ok = run_validate(project)
    assert ok.returncode == 0, ok.stderr
    assert "a worker can start git and the agent" in ok.stdout

    ray_project(project, cluster, tmp_path / "b", agent={"command": ["/nonexistent/agent-cli"]})
    out = run_validate(project)

    assert out.returncode == 2
    assert "Ray node" in out.stderr and "agent-cli" in out.stderr


def test_the_budget_caps_hold_on_the_workers_too(project: Project, cluster: Any, tmp_path: Path) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    cost = json.dumps({"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": 1.5})
    project.script(
        {
            "1A": {"implement": [{"write": {"1A.txt": "A\n"}, "print": [cost]}]},
            "1B": {"implement": [{"write": {"1B.txt": "B\n"}, "sleep": 6}]},
        }
    )
    ray_project(project, cluster, tmp_path, budget={"stage_usd": 1.0})

    first = project.run(timeout=240)

    assert first.returncode == 1, first.stdout + first.stderr
    assert "budget reached: stage 1 spent $1.50 of $1.00 (budget.stage_usd)" in first.stdout
    # 1B's implement ran while 1A spent the stage's budget: its worker refused to start its review
    assert [c["role"] for c in starts(project) if c["milestone"] == "1B"] == ["implement"]
    assert project.statuses()["1B"] == "interrupted"


def test_stop_of_one_milestone_reaches_its_worker(project: Project, cluster: Any, tmp_path: Path) -> None:
    import ray_cluster

    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    ray_project(project, cluster, tmp_path)
    project.script(
        {
            "1A": {"implement": [{"sleep": 2, "write": {"1A.txt": "a"}}]},
            "1B": {"implement": [{"print": ["1B is busy"], "hang": True}]},
        }
    )
    runner = project.start()
    try:
        ray_cluster.wait_for(lambda: any(c["milestone"] == "1B" for c in starts(project)), 120, "1B's agent")
        assert project.run("stop", "1B").returncode == 0
        out, err = runner.communicate(timeout=120)
    finally:
        runner.kill()
        _kill_stray_agents(project)

    assert runner.returncode == 1, out + err
    ended = [c for c in project.agent_calls() if c["milestone"] == "1B" and c["event"] != "start"]
    assert [c["event"] for c in ended] == ["terminated"]  # the agent on the worker was stopped
    statuses = {m["id"]: (m["status"], m["reason"]) for m in project.status_json()["milestones"]}
    assert statuses["1B"] == ("failed", "stopped by user")
    assert statuses["1A"][0] == "done"


def test_executor_keys_are_checked_with_the_rest_of_the_config(tmp_path: Path) -> None:
    from orchestrator_lib import config

    path = tmp_path / "orchestrator.config.json"
    bad = {"kind": "rey", "address": "ray://head", "resources": {"CPU": -1}, "workdir": "/x"}
    path.write_text(json.dumps({"executor": bad}))
    with pytest.raises(config.ConfigError) as e:
        config.load_config(path, {})
    said = str(e.value)
    assert "`executor.kind` must be one of" in said
    assert "`executor.resources` must be an object of resource names and numbers of at least 0" in said
    assert "unknown config key `executor.workdir` (did you mean `executor.work_dir`?)" in said
    path.write_text(json.dumps({}))
    assert config.load_config(path, {}).executor.kind == "local"  # today's behaviour by default


def test_the_config_travels_to_a_worker_as_plain_data_and_back(tmp_path: Path) -> None:
    from orchestrator_lib import config

    path = tmp_path / "orchestrator.config.json"
    data = {"executor": {"kind": "ray", "remote": "file:///r.git", "resources": {"CPU": 1, "agent": 0.5}},
            "agent": {"env": {"A": "1"}, "extra_args": ["--x"]}, "worktree": {"setup": [["make"]]}}  # fmt: skip
    path.write_text(json.dumps(data))
    loaded = config.load_config(path, {})
    assert config.from_data(json.loads(json.dumps(config.to_data(loaded))), path) == loaded


def test_a_url_is_shown_without_its_password() -> None:
    from orchestrator_lib.executor import shown_url

    assert shown_url("https://bob:s3cret@git.example.com/p.git") == "https://git.example.com/p.git"
    assert shown_url("ssh://git@git.example.com/p.git") == "ssh://git@git.example.com/p.git"
    assert shown_url("file:///shared/p.git") == "file:///shared/p.git"


def test_the_hub_keeps_each_dispatch_apart_and_drops_what_comes_after_it_ended() -> None:
    from orchestrator_lib.ray_hub import Hub

    hub = Hub()
    hub.pause(50.0)
    assert hub.push("1A#1", ["a"]) == (False, 50.0, (0.0, {}))
    hub.stop("1A#1")
    hub.spend(3.0, 1, 2.0)
    orders = hub.push("1B#1", ["b"])
    assert not orders.stop and orders.spent == (3.0, {1: 2.0})
    assert hub.push("1A#1", []).stop
    assert hub.take("1A#1") == ["a"] and hub.take("1A#1") == []
    hub.forget("1A#1")
    hub.push("1A#1", ["late"])  # a stray worker of a dispatch that is over
    assert hub.take("1A#1") == []

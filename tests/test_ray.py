"""Milestones as tasks on a real two-node Ray cluster on this machine (executor.kind "ray").

Which node ran an agent is read from the agent's own environment (RAY_RAYLET_PID, set by Ray in
every worker and inherited by the agent), never from the runner's word. The cluster is started once
for this module's tests (they share one xdist group) and always stopped, even on failure.
"""

from __future__ import annotations

import os
import subprocess
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

#!/usr/bin/env python3
"""Issue 15 benchmark: the same plan of N sleeping tasks, locally and on a local two-node Ray cluster.

One stage of N milestones (default 8), review off, agents that sleep T seconds (bench/sleep_agent.py),
max_parallel_tasks N; on Ray each task needs {"CPU": 1} and the two nodes offer N CPUs between them.
Prints both walls, and what Ray adds to each milestone once its task runs: the mean of
(finished_at - started_at) from `status --json` on Ray minus the same locally (the clone's fetch,
the pushes of its commits, the reply, the fetch back). The rest of the wall difference is paid once
per run and per worker process: connecting, shipping the code (runtime_env py_modules) and starting
a Python worker per parallel task (Ray starts a job's workers afresh).
Usage: python bench/bench_ray.py [--seconds T] [--tasks N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import ray_cluster  # noqa: E402  (tests/ray_cluster.py: the same two-node cluster as the tests)
from bench_parallel import ORCHESTRATOR, make_project  # noqa: E402


def measure(tasks: int, seconds: float, executor: dict[str, object] | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        make_project(root, tasks, seconds, False, Path(tmp) / "agents.log")
        if executor is not None:
            remote = Path(tmp) / "remote.git"
            subprocess.run(("git", "init", "-q", "--bare", str(remote)), check=True)
            config = json.loads((root / "orchestrator.config.json").read_text())
            config["executor"] = {**executor, "remote": remote.as_uri(), "work_dir": str(Path(tmp) / "w")}
            (root / "orchestrator.config.json").write_text(json.dumps(config))
        started = time.monotonic()
        run = subprocess.run((sys.executable, str(ORCHESTRATOR)), cwd=root, capture_output=True, text=True)
        wall = time.monotonic() - started
        assert run.returncode == 0, run.stdout + run.stderr
        status = subprocess.run((sys.executable, str(ORCHESTRATOR), "status", "--json"), cwd=root,
                                capture_output=True, text=True, check=True)  # fmt: skip
        milestones = json.loads(status.stdout)["milestones"]
    durations = [m["finished_at"] - m["started_at"] for m in milestones]
    return {"wall_seconds": round(wall, 2), "milestone_seconds": round(statistics.mean(durations), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    local = measure(args.tasks, args.seconds, None)
    half = (args.tasks + 1) // 2
    cluster = ray_cluster.start(head_cpus=half, second_cpus=args.tasks - half)
    try:
        on_ray = measure(args.tasks, args.seconds, {"kind": "ray", "address": cluster.address, "resources": {"CPU": 1}})
    finally:
        cluster.stop()
    added = round(on_ray["milestone_seconds"] - local["milestone_seconds"], 2)
    fixed = round(on_ray["wall_seconds"] - local["wall_seconds"], 2)
    print(json.dumps({"tasks": args.tasks, "agent_seconds": args.seconds, "local": local, "ray": on_ray,
                      "ray_overhead_per_milestone_seconds": added, "ray_wall_overhead_seconds": fixed},
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

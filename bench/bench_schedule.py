#!/usr/bin/env python3
"""Issue 12 benchmark: a skewed plan run in stages mode and in dependencies mode, side by side.

Stage 1: one task of 8 s (1A) and three of 1 s (1B, 1C, 1D); stage 2: three tasks of 1 s, each
depending on one fast stage-1 task only (2A on 1B, 2B on 1C, 2C on 1D); stage 3: one task of 1 s
depending on everything. Agents are a scripted sleeper (bench/sleep_agent.py), review off.

Target: dependencies mode within 1 s per merge of its critical path, 1A then 3A: 8 + 1 s of agents
plus its 2 merges, so at most 9 + 2 x 1 = 11 s. Stages mode is the reference: 8 + 1 + 1 s of agents
plus its 3 stage merges. Prints both walls and their ratio (stages / dependencies).
Usage: python bench/bench_schedule.py [--slow 8] [--fast 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORCHESTRATOR = HERE.parent / "orchestrator.py"
PLAN = {  # id -> dependencies
    "1A": (),
    "1B": (),
    "1C": (),
    "1D": (),
    "2A": ("1B",),
    "2B": ("1C",),
    "2C": ("1D",),
    "3A": ("1A", "1B", "1C", "1D", "2A", "2B", "2C"),
}
CRITICAL_MERGES = 2  # 1A's and 3A's


def make_project(root: Path, schedule: str, slow: float, fast: float) -> None:
    root.mkdir()
    run = lambda *a: subprocess.run(a, cwd=root, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q", "-b", "main")
    (root / "milestones").mkdir()
    for mid, deps in PLAN.items():
        listed = "\n".join(f"- {d}" for d in deps) or "None"
        (root / "milestones" / f"{mid}.md").write_text(
            f"# Task {mid}\n\n## Tasks\n- Write `{mid}.txt`.\n\n## Exit Criteria\n- Written (`test -f {mid}.txt`)\n\n"
            f"## Dependencies\n{listed}\n\n## Estimated Time\n{max(1, round(slow if mid == '1A' else fast))} minutes\n"
        )
    seconds = {f"BENCH_AGENT_SECONDS_{mid}": str(slow if mid == "1A" else fast) for mid in PLAN}
    config = {
        "schedule": schedule,
        "max_parallel_tasks": 4,
        "review": {"enabled": False},
        "monitor": {"max_cpu_percent": 100, "max_memory_percent": 100, "min_free_disk_gb": 0},
        "agent": {
            "preset": "command",
            "command": [sys.executable, str(HERE / "sleep_agent.py")],
            "env": {"BENCH_AGENT_SECONDS": str(fast), **seconds},
        },
    }
    (root / "orchestrator.config.json").write_text(json.dumps(config))
    run("git", "add", "-A")
    run("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "plan")


def measure(schedule: str, slow: float, fast: float) -> float:
    """The wall time of one whole run (worktrees, agents, commits, checks, merges, TASKS.md)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        make_project(root, schedule, slow, fast)
        started = time.monotonic()
        out = subprocess.run((sys.executable, str(ORCHESTRATOR)), cwd=root, capture_output=True, text=True, timeout=300)
        wall = time.monotonic() - started
        assert out.returncode == 0, f"{schedule}: exit {out.returncode}\n{out.stdout}{out.stderr}"
        merged = subprocess.run(
            ("git", "log", "--format=%(trailers:key=Milestone,valueonly)", "main"),
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sorted(merged) == sorted(PLAN), f"{schedule}: merged {merged}"
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=float, default=8.0, help="seconds of the slow stage-1 task")
    parser.add_argument("--fast", type=float, default=1.0, help="seconds of every other task")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        stages = measure("stages", args.slow, args.fast)
        dependencies = measure("dependencies", args.slow, args.fast)
        runs.append({"stages_seconds": round(stages, 2), "dependencies_seconds": round(dependencies, 2)})
        print(json.dumps(runs[-1]), flush=True)
    stages = min(r["stages_seconds"] for r in runs)
    dependencies = min(r["dependencies_seconds"] for r in runs)
    critical = args.slow + args.fast
    target = critical + CRITICAL_MERGES * 1.0
    ok = dependencies <= target
    print(f"stages mode:       {stages:.2f}s (agents on its path: {args.slow + 2 * args.fast:g}s, plus 3 stage merges)")
    print(f"dependencies mode: {dependencies:.2f}s (critical path {critical:g}s of agents + {CRITICAL_MERGES} merges)")
    print(f"ratio stages/dependencies: {stages / dependencies:.2f}x")
    print(f"dependencies mode <= {target:g}s (critical path + 1 s per merge on it): {'PASS' if ok else 'FAIL'}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    result = {"runs": runs, "target_seconds": target, "pass": ok}
    (out / "bench_schedule.json").write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

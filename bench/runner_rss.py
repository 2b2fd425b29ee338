#!/usr/bin/env python3
"""Issue 6 benchmark: the runner's own memory with 16 agents running at once.

One stage of 16 milestones, max_parallel_tasks 16, agents that sleep (bench/sleep_agent.py).
Once every agent has started, the runner process's RSS (not its children's) is read for a few
seconds; the largest reading is the figure. The metrics sampler runs as in any run.
Target: under 100 MB. Writes bench/results/runner_rss-<time>.json.
Usage: python bench/runner_rss.py [--agents N] [--seconds T] [--limit-mb M]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ORCHESTRATOR = HERE.parent / "orchestrator.py"
MB = 1024**2


def milestone_ids(count: int) -> list[str]:
    letters = [chr(ord("A") + i) for i in range(26)]
    return [f"1{letters[i]}" for i in range(count)]


def make_project(root: Path, agents: int, seconds: float, agent_log: Path) -> None:
    root.mkdir()

    def git(*args: str) -> None:
        subprocess.run(("git", *args), cwd=root, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (root / "milestones").mkdir()
    for mid in milestone_ids(agents):
        (root / "milestones" / f"{mid}.md").write_text(
            f"# Task {mid}\n\n## Tasks\n- Write `{mid}.txt`.\n\n## Exit Criteria\n- Written (`test -f {mid}.txt`)\n"
        )
    agent = {
        "preset": "command",
        "command": [sys.executable, str(HERE / "sleep_agent.py")],
        "env": {"BENCH_AGENT_SECONDS": str(seconds), "BENCH_AGENT_LOG": str(agent_log)},
    }
    config = {
        "max_parallel_tasks": agents,
        "review": {"enabled": False},
        "monitor": {"max_cpu_percent": 100, "max_memory_percent": 100, "min_free_disk_gb": 0, "interval_seconds": 1},
        "agent": agent,
    }
    (root / "orchestrator.config.json").write_text(json.dumps(config))
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-q", "-m", "plan")


def measure(agents: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root, agent_log = Path(tmp) / "repo", Path(tmp) / "agents.log"
        make_project(root, agents, seconds, agent_log)
        out = open(Path(tmp) / "runner.out", "w+")  # noqa: SIM115 - read back on failure
        runner = subprocess.Popen((sys.executable, str(ORCHESTRATOR)), cwd=root, stdout=out, stderr=subprocess.STDOUT)
        me = psutil.Process(runner.pid)
        _wait_for_agents(agent_log, agents, runner)
        readings, running = [], []
        for _ in range(10):  # while every agent sleeps
            readings.append(me.memory_info().rss)
            running.append(sum(1 for c in me.children() if "sleep_agent.py" in " ".join(c.cmdline())))
            time.sleep(0.4)
        code = runner.wait(timeout=seconds + 120)
        out.seek(0)
        assert code == 0, f"run failed with exit {code}:\n{out.read()}"
        metrics = json.loads((root / "logs" / "metrics.json").read_text())
    return {
        "agents": agents,
        "agents_running_seen": min(running),
        "runner_rss_mb": round(max(readings) / MB, 1),
        "runner_rss_mb_readings": [round(r / MB, 1) for r in readings],
        "metrics_json_peaks": metrics["peaks"],
    }


def _wait_for_agents(agent_log: Path, agents: int, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and runner.poll() is None:
        if agent_log.exists() and len(agent_log.read_text().splitlines()) >= agents:
            time.sleep(0.5)  # the last ones settle
            return
        time.sleep(0.05)
    raise SystemExit(f"the {agents} agents did not all start (runner exit {runner.poll()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each agent sleeps")
    parser.add_argument("--limit-mb", type=float, default=100.0)
    args = parser.parse_args()
    result = measure(args.agents, args.seconds)
    ok = result["agents_running_seen"] == args.agents and float(str(result["runner_rss_mb"])) < args.limit_mb
    result.update(limit_mb=args.limit_mb, passed=ok)
    print(json.dumps(result))
    print(
        f"runner RSS with {result['agents_running_seen']} agents running: {result['runner_rss_mb']} MB "
        f"(target < {args.limit_mb:g} MB): {'PASS' if ok else 'FAIL'}"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"runner_rss-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

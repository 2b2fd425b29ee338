#!/usr/bin/env python3
"""Issue 6 benchmark: how fast `status --json` answers on a 100-milestone plan.

A repository with 10 stages of 10 milestones: the first three stages merged (merge commits with
`Milestone:` trailers, as the runner makes them), the state store holding a record for every
milestone (some running, some failed), as another process would find it mid-run.
The figure is the median wall-clock time of `python orchestrator.py status --json`, a fresh
process each time (interpreter start, imports, plan parsing, state, git included), with
bytecode cached as in any install. Target: under 300 ms.
Writes bench/results/status_json-<time>.json.
Usage: python bench/status_json.py [--runs N] [--limit-ms M]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORCHESTRATOR = HERE.parent / "orchestrator.py"
sys.path.insert(0, str(HERE.parent))

from orchestrator_lib.state import MilestoneState, StateStore  # noqa: E402

STAGES, PER_STAGE, MERGED_STAGES = 10, 10, 3


def ids(stage: int) -> list[str]:
    return [f"{stage}{chr(ord('A') + i)}" for i in range(PER_STAGE)]


def make_project(root: Path) -> None:
    root.mkdir()

    def git(*args: str) -> None:
        subprocess.run(
            ("git", "-c", "user.name=b", "-c", "user.email=b@b", *args), cwd=root, check=True, capture_output=True
        )

    git("init", "-q", "-b", "main")
    (root / "milestones").mkdir()
    for stage in range(1, STAGES + 1):
        for mid in ids(stage):
            deps = ", ".join(ids(stage - 1)[:2]) if stage > 1 else "None"
            (root / "milestones" / f"{mid}.md").write_text(
                f"# Milestone {mid}\n\n## Description\nPart {mid} of the plan.\n\n## Entry Requirements\n- None\n\n"
                f"## Tasks\n- Write `src/{mid}.py`.\n- Test it in `tests/test_{mid}.py`.\n\n"
                f"## Exit Criteria\n- Tests pass (`pytest -q tests/test_{mid}.py`)\n\n"
                f"## Dependencies\n- {deps}\n\n## Estimated Time\n90 minutes\n"
            )
    git("add", "-A")
    git("commit", "-q", "-m", "plan")
    for stage in range(1, MERGED_STAGES + 1):
        for mid in ids(stage):
            git("checkout", "-q", "-b", f"milestone/{mid}", "main")
            (root / f"{mid}.txt").write_text(mid)
            git("add", "-A")
            git("commit", "-q", "-m", f"Milestone {mid}")
            git("checkout", "-q", "main")
            git("merge", "-q", "--no-ff", "-m", f"Merge milestone {mid}\n\nMilestone: {mid}", f"milestone/{mid}")
    store = StateStore.open(root)
    assert store is not None
    now = time.time()
    records = []
    for stage in range(1, STAGES + 1):
        for n, mid in enumerate(ids(stage)):
            status = "merged" if stage <= MERGED_STAGES else "running" if stage == 4 and n < 8 else "pending"
            status = "failed" if stage == 4 and n == 9 else status
            records.append(
                MilestoneState(
                    mid,
                    stage,
                    f"Milestone {mid}",
                    status=status,
                    attempts=1,
                    started_at=now - 600,
                    agent_pid=10_000 + n if status == "running" else 0,
                    last_line=f"→ Edit(file_path=src/{mid}.py)",
                    cost_usd=0.25,
                    input_tokens=20_000,
                    output_tokens=3_000,
                    review_rounds=1,
                    reason="exit criteria not met" if status == "failed" else "",
                )
            )
    store.put(*records)
    store.update_run(status="running", pid=0, started_at=now - 900)
    store.close()


def measure(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        make_project(root)
        argv = (sys.executable, str(ORCHESTRATOR), "status", "--json")
        # Bytecode cached as in any install (PYTHONDONTWRITEBYTECODE may be set where this runs);
        # the cache goes to the temp folder, not into the checkout. The first run fills it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        first = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=True, env=env)
        data = json.loads(first.stdout)
        assert len(data["milestones"]) == STAGES * PER_STAGE
        assert data["progress"]["merged"] == MERGED_STAGES * PER_STAGE, data["progress"]
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, cwd=root, capture_output=True, check=True, env=env)
            times.append((time.perf_counter() - started) * 1000)
    return {
        "milestones": STAGES * PER_STAGE,
        "merged": MERGED_STAGES * PER_STAGE,
        "runs": runs,
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "times_ms": [round(t, 1) for t in times],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--limit-ms", type=float, default=300.0)
    args = parser.parse_args()
    result = measure(args.runs)
    ok = float(str(result["median_ms"])) < args.limit_ms
    result.update(limit_ms=args.limit_ms, passed=ok)
    print(json.dumps(result))
    print(
        f"status --json on a {result['milestones']}-milestone plan: median {result['median_ms']} ms "
        f"(min {result['min_ms']}, max {result['max_ms']}; target < {args.limit_ms:g} ms): {'PASS' if ok else 'FAIL'}"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"status_json-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

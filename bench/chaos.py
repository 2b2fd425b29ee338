#!/usr/bin/env python3
"""Issue 10 chaos benchmark: 200 SIGKILLs of the runner at seeded random moments, under CPU load.

Rounds of tests/test_chaos.py (12 milestones over three stages, agents that append their
deliverable, so a second start shows) are run until `--kills` kills have landed: each round kills
the runner 20 times (the runner alone, or with its whole process group: --mode), resumes after each,
then checks the end result: every milestone merged once, its file holding one line, every agent
started exactly once per role. Two busy-loop processes load the CPU the whole time (--load).
Reports kills survived / kills landed and agent starts per milestone. CI does not run this.

Usage: python bench/chaos.py [--kills 200] [--seed 7] [--mode mixed|alone|group] [--load 2]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent)]

from conftest import Project, init_repo  # noqa: E402
from test_chaos import Kill, agent_starts, assert_the_plan_landed_once, chaos_plan, kill_and_resume, schedule  # noqa: E402

PER_ROUND = 20


def busy_loops(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen((sys.executable, "-c", "while True: pass")) for _ in range(n)]


def round_kills(rng: random.Random, mode: str) -> list[Kill]:
    kills = schedule(rng, PER_ROUND)
    if mode == "mixed":
        return kills
    return [k._replace(group=mode == "group") for k in kills]


def one_round(folder: Path, rng: random.Random, mode: str) -> tuple[list[str], dict[tuple[str, str], int], str]:
    root = folder / "repo"
    init_repo(root)
    project = Project(root)
    project.configure()
    chaos_plan(project)
    try:
        landed = kill_and_resume(project, round_kills(rng, mode))
        assert_the_plan_landed_once(project)
        problem = ""
    except AssertionError as e:
        landed, problem = [], " | ".join(str(e).splitlines()[-12:]) or "assertion failed"
    return landed, agent_starts(project), problem


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=("mixed", "alone", "group"), default="mixed")
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes during the run")
    args = parser.parse_args()
    os.environ.update(HOME=tempfile.mkdtemp(prefix="chaos-home-"), GIT_CONFIG_NOSYSTEM="1")
    rng = random.Random(args.seed)
    load = busy_loops(args.load)
    started = time.monotonic()
    landed_total = survived = rounds = 0
    places: collections.Counter[str] = collections.Counter()
    starts_seen: collections.Counter[int] = collections.Counter()
    problems: list[str] = []
    try:
        while landed_total < args.kills:
            rounds += 1
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
                landed, starts, problem = one_round(Path(tmp), rng, args.mode)
            hits = [w for w in landed if not w.startswith("missed")]
            landed_total += len(hits) if not problem else PER_ROUND
            survived += len(hits) if not problem else 0
            places.update(hits)
            starts_seen.update(starts.values())
            if problem:
                problems.append(f"round {rounds}: {problem}")
            print(f"round {rounds}: {len(hits)} kills landed, {problem or 'survived'}", flush=True)
    finally:
        for p in load:
            p.kill()
    elapsed = time.monotonic() - started
    print(f"\nchaos bench: seed {args.seed}, mode {args.mode}, {args.load} busy loops, {rounds} rounds, {elapsed:.0f}s")
    print(f"kills survived: {survived}/{landed_total}")
    print("where they landed: " + ", ".join(f"{w} {n}" for w, n in sorted(places.items())))
    counts = ", ".join(f"{n} start(s): {c}" for n, c in sorted(starts_seen.items()))
    print(f"agent starts per milestone and role: {counts}")
    for problem in problems:
        print(f"  {problem}")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Benchmark agent: sleeps BENCH_AGENT_SECONDS (BENCH_AGENT_SECONDS_<ID> for one milestone), writes one file,
exits 0. Logs its start time."""

import os
import sys
import time
from pathlib import Path

sys.stdin.read()
log = os.environ.get("BENCH_AGENT_LOG")
if log:
    with open(log, "a") as f:
        f.write(f"{os.environ['ORCHESTRATOR_MILESTONE']} {os.environ['ORCHESTRATOR_ROLE']} {time.time()}\n")
if os.environ.get("ORCHESTRATOR_ROLE") == "review":
    print("VERDICT: PASS")
    raise SystemExit(0)
mid = os.environ["ORCHESTRATOR_MILESTONE"]
time.sleep(float(os.environ.get(f"BENCH_AGENT_SECONDS_{mid}", os.environ.get("BENCH_AGENT_SECONDS", "5"))))
Path(f"{os.environ['ORCHESTRATOR_MILESTONE']}.txt").write_text("done\n")

#!/usr/bin/env python3
"""Issue 9 benchmark: what masking costs per agent output line.

Every line an agent prints goes through `Redactor.mask` before it reaches its log, so this is
a tax on every line. The redactor holds 40 values (a large `.env` plus secret-named variables)
and the key shapes; the lines are typical Claude stream-json events of about 400 characters,
one in a hundred holding a key. The figure is the median time per line over several rounds.
Target: under 50 µs a line (an agent prints at most a few hundred lines a second).
Writes bench/results/redact_mask-<time>.json.
Usage: python bench/redact_mask.py [--lines N] [--limit-us U]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from orchestrator_lib.redact import Redactor  # noqa: E402


def lines(count: int) -> list[str]:
    text = "Reading src/app.py and running the tests; all 42 passed in 1.3s. " * 5
    plain = json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}})
    keyed = plain.replace("all 42", "sk-ant-api03-" + "x" * 40)
    return [keyed if i % 100 == 0 else plain for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--limit-us", type=float, default=50.0)
    args = parser.parse_args()
    environ = {f"SERVICE_{i}_TOKEN": f"token-value-number-{i:04d}" for i in range(20)}
    dotenv = {f"SETTING_{i}": f"dotenv-value-number-{i:04d}" for i in range(20)}
    redactor = Redactor.from_environment(environ, dotenv)
    sample = lines(args.lines)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for line in sample:
            redactor.mask(line)
        rounds.append((time.perf_counter() - started) / len(sample) * 1e6)
    median = statistics.median(rounds)
    result = {
        "median_us_per_line": round(median, 2),
        "rounds_us": [round(r, 2) for r in rounds],
        "line_chars": len(sample[1]),
        "values": len(redactor.values),
        "limit_us": args.limit_us,
    }
    out = HERE / "results" / f"redact_mask-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"mask: {median:.1f} µs per {len(sample[1])}-character line ({len(redactor.values)} values); {out}")
    return 0 if median < args.limit_us else 1


if __name__ == "__main__":
    raise SystemExit(main())

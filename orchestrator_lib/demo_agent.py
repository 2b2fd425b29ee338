#!/usr/bin/env python3
"""The demo preset's offline agent: deterministic, no account, no network.

It follows the orchestrator's agent contract (README, "Plugging in your own agent"):
it reads the prompt from stdin, works in the current directory and writes every fenced
code block whose info string names a file (```python file=pkg/mod.py) to that file.
As a reviewer it passes work whose exit-criteria checks ran; as a resolver it keeps
both sides of a conflict.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

FENCE = re.compile(r"^```[^\n]*?\bfile=(\S+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CONFLICT = re.compile(r"^<<<<<<< [^\n]*\n(.*?)^=======\n(.*?)^>>>>>>> [^\n]*\n", re.MULTILINE | re.DOTALL)


def say(text: str) -> None:
    print(text, flush=True)
    time.sleep(float(os.environ.get("DEMO_AGENT_DELAY", "0.4")))


def implement(prompt: str) -> int:
    files = FENCE.findall(prompt)
    if not files:
        say("demo agent: this milestone has no ```lang file=PATH blocks, so there is nothing I can write")
        return 1
    for path, body in files:
        target = Path(path)
        if target.is_absolute() or ".." in target.parts:
            say(f"demo agent: refusing to write outside the worktree: {path}")
            return 1
        say(f"demo agent: writing {path} ({len(body.splitlines())} lines)")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    say("demo agent: done")
    return 0


def review() -> int:
    say("demo agent: reviewing the diff")
    verdict = {"verdict": "pass", "findings": []}
    review_file = os.environ.get("ORCHESTRATOR_REVIEW_FILE")
    if review_file:
        Path(review_file).write_text(json.dumps(verdict), encoding="utf-8")
    say("VERDICT: PASS")
    return 0


def resolve() -> int:
    for path in Path(".").rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            text = path.read_text(encoding="utf-8", errors="replace")
            merged = CONFLICT.sub(lambda m: m.group(1) + m.group(2), text)
            if merged != text:
                say(f"demo agent: kept both sides in {path}")
                path.write_text(merged, encoding="utf-8")
    return 0


def main() -> int:
    prompt = sys.stdin.read()
    role = os.environ.get("ORCHESTRATOR_ROLE", "implement")
    say(f"demo agent: {role} {os.environ.get('ORCHESTRATOR_MILESTONE', '?')}")
    if role == "review":
        return review()
    if role in ("resolve", "update"):  # update: its branch is merging the base; keep both sides
        return resolve()
    return implement(prompt)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""A scripted agent for tests: a real executable the runner starts like any other agent.

Behaviour comes from the JSON file named by FAKE_AGENT_SCRIPT, keyed by milestone id
(or "*") and role, one entry per invocation of that (milestone, role); the last entry
repeats. Every invocation appends a JSON line to FAKE_AGENT_LOG: milestone, role, pid,
start, end, cwd and the prompt, so tests can assert what the runner really did.

Entry keys: write {path: content}, append {path: text}, delete [paths], sleep seconds,
print [lines], exit code, hang (sleep forever), verdict pass|fail with findings [...],
verdict_via file|line|none, resolve both|ours|leave|fail (the resolve role, or any role given it),
touch_outside (writes a file in the
parent of the worktree, to prove the runner never commits it), commit "message" (commits
everything itself, as an agent that ignores the rules would).
Resilience keys: sleep_random [low, high] seconds; chatter [interval, seconds] prints a line
every interval; print_after [lines], printed after the writes and sleeps; ignore_term (SIGTERM
is ignored); kill_parent (SIGKILLs the runner that started it, not the wrapper between them:
a crash); wait_for_file [path, seconds] first waits (bounded) until that file exists. A SIGTERM
that is not ignored is logged as event "terminated" before the agent exits.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

CONFLICT = re.compile(r"^<<<<<<< [^\n]*\n(.*?)^=======\n(.*?)^>>>>>>> [^\n]*\n", re.MULTILINE | re.DOTALL)


def load_entry(milestone: str, role: str) -> dict:
    script_path = os.environ.get("FAKE_AGENT_SCRIPT")
    script = json.loads(Path(script_path).read_text()) if script_path and Path(script_path).exists() else {}
    entries = (script.get(milestone) or {}).get(role) or (script.get("*") or {}).get(role)
    if not entries:
        return default_entry(milestone, role)
    counter = Path(os.environ.get("FAKE_AGENT_STATE", ".")) / f"{milestone}-{role}.count"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    return entries[min(n, len(entries) - 1)]


def default_entry(milestone: str, role: str) -> dict:
    if role == "review":
        return {"verdict": "pass"}
    if role == "resolve":
        return {"resolve": "both"}
    return {"write": {f"{milestone}.txt": f"work of {milestone} ({role})\n"}}


def act(entry: dict, role: str) -> int:
    if entry.get("wait_for_file"):
        path, seconds = entry["wait_for_file"]
        deadline = time.monotonic() + float(seconds)
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    for line in entry.get("print", []):
        print(line, flush=True)
    for path, content in entry.get("write", {}).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    for path, content in entry.get("append", {}).items():
        with open(path, "a") as f:
            f.write(content)
    for path in entry.get("delete", []):
        Path(path).unlink(missing_ok=True)
    time.sleep(float(entry.get("sleep", 0)))
    if entry.get("sleep_random"):
        time.sleep(random.uniform(*entry["sleep_random"]))
    if entry.get("chatter"):
        interval, seconds = entry["chatter"]
        for n in range(int(seconds / interval)):
            print(f"working {n}", flush=True)
            time.sleep(interval)
    if entry.get("kill_parent"):
        os.kill(runner_pid(), signal.SIGKILL)
    for line in entry.get("print_after", []):
        print(line, flush=True)
    while entry.get("hang"):
        time.sleep(1)
    if entry.get("touch_outside"):
        Path("..", "outside-by-agent.txt").write_text("x")
    if entry.get("commit"):
        subprocess.run(("git", "add", "-A"), check=True)
        subprocess.run(("git", "commit", "-q", "-m", entry["commit"]), check=True)
    if role == "review":
        review(entry)
    if role == "resolve" or "resolve" in entry:  # any role may resolve conflict markers (e.g. "update")
        return resolve(entry.get("resolve", "both"))
    return int(entry.get("exit", 0))


def runner_pid() -> int:
    """The runner that started this agent: the parent of the wrapper it runs under."""
    import psutil

    parent = psutil.Process(os.getppid())
    return int(parent.ppid()) if "orchestrator_lib.agent_wrapper" in parent.cmdline() else parent.pid


def review(entry: dict) -> None:
    verdict, findings = entry.get("verdict", "pass"), entry.get("findings", [])
    via = entry.get("verdict_via", "file")
    if via == "file":
        Path(os.environ["ORCHESTRATOR_REVIEW_FILE"]).write_text(json.dumps({"verdict": verdict, "findings": findings}))
    elif via == "line":
        for finding in findings:
            print(f"- {finding}")
        print(f"VERDICT: {verdict.upper()}")


def resolve(how: str) -> int:
    if how in ("fail", "leave"):  # leave: claims success, changes nothing
        return 1 if how == "fail" else 0
    for path in Path(".").rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            text = path.read_text(errors="replace")
            fixed = CONFLICT.sub(lambda m: m.group(1) + (m.group(2) if how == "both" else ""), text)
            if fixed != text:
                path.write_text(fixed)
    return 0


def watch_term(entry: dict, record: dict, log: str | None) -> None:
    if entry.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return

    def terminated(_signum: int, _frame: object) -> None:
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({**record, "event": "terminated", "end": time.time()}) + "\n")
        os._exit(143)

    signal.signal(signal.SIGTERM, terminated)


def main() -> int:
    milestone = os.environ.get("ORCHESTRATOR_MILESTONE", "?")
    role = os.environ.get("ORCHESTRATOR_ROLE", "implement")
    prompt = sys.stdin.read()
    record = {
        "milestone": milestone,
        "role": role,
        "pid": os.getpid(),
        "start": time.time(),
        "cwd": os.getcwd(),
        "prompt": prompt,
        "prompt_file": os.environ.get("ORCHESTRATOR_PROMPT_FILE"),
        "worktree": os.environ.get("ORCHESTRATOR_WORKTREE"),
        "secret": os.environ.get("FAKE_SECRET_SEEN_AS"),
        "port_base": os.environ.get("ORCHESTRATOR_PORT_BASE"),
        "slug": os.environ.get("ORCHESTRATOR_TASK_SLUG"),
        "raylet_pid": os.environ.get("RAY_RAYLET_PID"),  # set by Ray in its workers: which node ran this
    }
    log = os.environ.get("FAKE_AGENT_LOG")
    entry = load_entry(milestone, role)
    watch_term(entry, record, log)
    if log:  # the start line goes out first, so a killed or hanging agent is still on record
        with open(log, "a") as f:
            f.write(json.dumps({**record, "event": "start"}) + "\n")
    code = act(entry, role)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({**record, "event": "end", "end": time.time(), "exit": code}) + "\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""Notifications from real runs: notify.command gets each event as JSON, desktop notifications
go through notify-send, and a broken or hanging notifier never blocks or fails the run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from conftest import Project
from live import alive, output, start

RECORDER = """\
import json, os, sys, time
event = json.loads(sys.stdin.read())
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({**event, "notifier_pid": os.getpid()}) + "\\n")
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def recorder(project: Project, *extra: str) -> tuple[list[str], Path]:
    script = project.root.parent / "notify_recorder.py"
    script.write_text(RECORDER)
    events = project.root.parent / "events.jsonl"
    return [sys.executable, str(script), str(events), *extra], events


def events_in(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_failed_milestone_and_the_end_of_the_run_are_sent_as_json(project: Project) -> None:
    project.milestone("1A", "Alpha")
    project.milestone("1B", "Beta", exit_checks=["Never true (`false`)"])
    project.commit_plan()
    command, events = recorder(project)
    project.configure(review={"enabled": False, "max_rounds": 1}, notify={"command": command})
    assert project.run().returncode == 1
    sent = events_in(events)
    assert [e["event"] for e in sent] == ["milestone_failed", "run_finished"]
    failed, finished = sent
    assert failed["milestone"] == "1B" and failed["title"] == "Beta" and failed["status"] == "failed"
    assert "exit criteria not met" in failed["reason"] and failed["message"].startswith("1B failed: ")
    assert finished["status"] == "failed" and finished["exit_code"] == 1
    assert (finished["merged"], finished["total"]) == (0, 2)
    assert all(e["project"] == str(project.root) and e["time"] > 0 for e in sent)

    project.script({"1B": {"implement": [{"write": {"1B.txt": "b"}}]}})
    project.configure(notify={"command": command})  # review on again; 1B's check still fails
    assert project.run().returncode == 1
    again = events_in(events)[2:]
    assert [e["event"] for e in again] == ["milestone_failed", "run_finished"]  # each failure once per run


def test_a_usage_limit_pause_and_the_resume_are_sent(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    command, events = recorder(project)
    project.configure(claude_rate_limit_wait=1, notify={"command": command})
    limit = "You've hit your session limit"  # no reset time: waits claude_rate_limit_wait seconds
    project.script({"1A": {"implement": [{"print": [limit], "exit": 1}, {"write": {"1A.txt": "a"}}]}})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    sent = events_in(events)
    assert [e["event"] for e in sent] == ["usage_limit", "resumed", "run_finished"]
    paused, resumed, finished = sent
    assert paused["reason"].startswith(limit) and paused["until"] >= paused["time"]
    assert resumed["time"] >= paused["until"] - 0.5
    assert finished["status"] == "finished" and (finished["merged"], finished["total"]) == (1, 1)


def test_a_hanging_or_broken_notifier_never_blocks_or_fails_the_run(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B", exit_checks=["(`false`)"])
    project.commit_plan()
    command, events = recorder(project, "600")  # records, then hangs for ten minutes
    project.configure(review={"enabled": False, "max_rounds": 1}, notify={"command": command})
    began = time.monotonic()
    out = project.run(timeout=60)
    assert out.returncode == 1
    assert time.monotonic() - began < 30  # not the notifier's ten minutes
    sent = events_in(events)
    assert [e["event"] for e in sent] == ["milestone_failed"]  # in order: the rest waited behind it
    assert not alive(sent[0]["notifier_pid"])  # stopped at the end of the run, not left behind

    project.configure(review={"enabled": False, "max_rounds": 1}, notify={"command": ["no-such-notifier"]})
    runner = start(project.root)
    assert runner.wait(timeout=60) == 1, output(project.root)  # 1B fails as before; the notifier changes nothing
    log = sorted((project.root / "logs").glob("orchestrator_*.log"))[-1].read_text()
    assert "WARNING" in log and "notification milestone_failed: `no-such-notifier` failed" in log


def test_desktop_notifications_go_through_notify_send(project: Project) -> None:
    project.milestone("1A", exit_checks=["(`false`)"])
    project.commit_plan()
    bin_dir = project.root.parent / "bin"
    bin_dir.mkdir()
    calls = project.root.parent / "notify-send.txt"
    fake = bin_dir / "notify-send"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {calls}\necho --- >> {calls}\n")
    fake.chmod(0o755)
    project.configure(review={"enabled": False, "max_rounds": 1}, notify={"desktop": True})
    out = project.run(env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 1
    shown = calls.read_text().split("---\n")[:-1]
    assert len(shown) == 2
    assert all("Claude Code Orchestrator" in s for s in shown)
    assert "1A failed: exit criteria not met" in shown[0]
    assert "run failed: 0/1 milestones merged" in shown[1]

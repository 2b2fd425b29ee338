"""The resource guard (advanced.SystemMonitor) and logs/metrics.json.

psutil readings are injected through a fake probe; everything else is real: git, the runner,
the agents, the clock where a real run is involved.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from live import agent_started, milestone, output, running, start, wait_for

import advanced
import orchestrator
from advanced import PsutilProbe, SystemMonitor
from orchestrator_lib.config import MonitorConfig
from orchestrator_lib.metrics import MetricsSampler
from orchestrator_lib.state import MilestoneState

MB = 1024**2


class FakeProbe:
    """psutil readings set by the test; CPU readings may be a script, consumed one per reading."""

    def __init__(self, cpu: float = 5.0, memory: float = 40.0, disk: float = 500.0) -> None:
        self.cpu, self.memory, self.disk = cpu, memory, disk
        self.cpu_script: list[float] = []
        self.cpu_reads = 0

    def cpu_percent(self) -> float:
        self.cpu_reads += 1
        return self.cpu_script.pop(0) if self.cpu_script else self.cpu

    def memory_percent(self) -> float:
        return self.memory

    def disk_free_gb(self, path: Path) -> float:
        return self.disk

    def rss(self, pid: int, tree: bool) -> int:
        return (300 if tree else 40) * MB


class FakeTime:
    """A clock and a sleep for SystemMonitor: sleeping advances the clock and runs `on_sleep`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Any] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep.pop(0)()
        return False


def monitor(probe: FakeProbe, t: FakeTime, **config: float) -> SystemMonitor:
    settings = {"max_cpu_percent": 90, "max_memory_percent": 80, "min_free_disk_gb": 2, "interval_seconds": 5}
    settings.update(config)
    return SystemMonitor(MonitorConfig(**settings), Path("."), probe=probe, clock=t.clock, sleep=t.sleep)


def test_cpu_is_the_average_of_the_last_readings() -> None:
    probe, t = FakeProbe(), FakeTime()
    guard = monitor(probe, t)
    probe.cpu_script = [20, 20, 20, 20, 100]  # one busy moment among quiet ones
    reasons = []
    for _ in range(5):
        t.now += 2
        reasons.append(guard.hold_reason())
    assert reasons == [None] * 5  # average 36%: not held for a single spike
    probe.cpu_script = [100, 100, 100, 100]
    for _ in range(4):
        t.now += 2
        reason = guard.hold_reason()
    assert reason == "CPU 100% (average) is above monitor.max_cpu_percent 90"
    assert guard.sample().cpu_percent == 100  # the last five: all busy


def test_readings_closer_than_a_second_are_not_taken() -> None:
    probe, t = FakeProbe(cpu=50), FakeTime()
    guard = monitor(probe, t)
    for _ in range(10):
        guard.sample()  # many workers asking at the same instant
    assert probe.cpu_reads == 1
    t.now += 1.0
    guard.sample()
    assert probe.cpu_reads == 2


@pytest.mark.parametrize(
    ("setting", "high", "low", "reason"),
    [
        ("memory", 95.0, 50.0, "memory 95% is above monitor.max_memory_percent 80"),
        ("disk", 0.5, 20.0, "free disk 0.5 GB is below monitor.min_free_disk_gb 2"),
        ("cpu", 99.0, 10.0, "CPU 99% (average) is above monitor.max_cpu_percent 90"),
    ],
)
def test_starts_are_held_while_over_a_threshold_and_released_after(
    setting: str, high: float, low: float, reason: str
) -> None:
    probe, t = FakeProbe(), FakeTime()
    guard = monitor(probe, t, interval_seconds=5)
    setattr(probe, setting, high)

    def recover() -> None:
        setattr(probe, setting, low)
        probe.cpu_script = [low] * 5  # CPU: enough quiet readings to bring the average down

    t.on_sleep = [lambda: None, lambda: None, recover]
    holds: list[str | None] = []
    assert guard.wait_until_ok(threading.Event(), holds.append) is None
    assert holds == [reason, reason, reason, None]  # said why while held, then released
    assert t.sleeps == [5, 5, 5]  # re-checked every interval_seconds


def test_holding_gives_up_after_max_wait_minutes() -> None:
    probe, t = FakeProbe(disk=0.5), FakeTime()
    guard = monitor(probe, t, max_wait_minutes=0.25, interval_seconds=4)  # fractions of a minute
    holds: list[str | None] = []
    reason = guard.wait_until_ok(threading.Event(), holds.append)
    assert reason == "did not recover within 0.25 min: free disk 0.5 GB is below monitor.min_free_disk_gb 2"
    assert 15 <= t.now - 1000 < 20
    assert None not in holds


def test_a_stop_ends_the_hold() -> None:
    probe, t = FakeProbe(memory=99), FakeTime()
    guard = monitor(probe, t)
    stop = threading.Event()
    t.on_sleep = [stop.set]
    assert guard.wait_until_ok(stop, lambda _: None) == "stopped"


def test_agent_memory_counts_the_whole_process_tree() -> None:
    child = "x = bytearray(80 * 1024 * 1024); import time; time.sleep(60)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    agent = subprocess.Popen((sys.executable, "-c", parent), start_new_session=True)
    try:
        probe = PsutilProbe()
        guard = SystemMonitor(MonitorConfig(), Path("."), probe=probe)
        tree = wait_for(lambda: (r := guard.agent_rss({"1A": agent.pid})["1A"]) > 80 * MB and r, "the child's memory")
        assert probe.rss(agent.pid, tree=False) < 80 * MB < tree  # the agent alone is small; its test run is not
        assert guard.own_rss() > 5 * MB
        assert probe.rss(2**22 + 12345, tree=True) == 0  # a process that is gone
    finally:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)


# ---------------------------------------------------------------- the guard in real runs


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProbe]:
    """The real runner, in this process, reading psutil through a fake probe."""
    probe = FakeProbe()
    monkeypatch.setattr(advanced, "PsutilProbe", lambda: probe)
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    yield probe
    for handler in root_logger.handlers[:]:
        if handler not in handlers:
            root_logger.removeHandler(handler)
            handler.close()
    root_logger.setLevel(level)


def test_runner_holds_new_starts_while_memory_is_high_and_running_agents_continue(
    project: Project, in_process: FakeProbe
) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    project.configure(
        max_parallel_tasks=1,
        review={"enabled": False, "max_rounds": 1},
        monitor={"max_memory_percent": 80, "max_wait_minutes": 2, "interval_seconds": 0.1},
    )
    project.script({"1A": {"implement": [{"sleep": 1.5, "write": {"1A.txt": "a"}}]}})
    probe = in_process
    probe.memory = 95
    outcome: dict[str, int] = {}
    runner = threading.Thread(target=lambda: outcome.update(code=orchestrator.main(["--project", str(project.root)])))
    runner.start()
    try:
        held = "memory 95% is above monitor.max_memory_percent 80"
        wait_for(lambda: project.status_json()["run"]["hold_reason"] == held, "the hold in status --json")
        time.sleep(0.5)  # five intervals: still nothing started
        assert project.agent_calls() == []
        text = project.run("status").stdout
        assert f"holding new agent starts: {held}" in text and "running (waits: resources)" in text

        released = time.time()
        probe.memory = 50
        wait_for(lambda: agent_started(project, "1A"), "1A's agent after the release")
        assert agent_started(project, "1A")[0]["start"] >= released
        probe.memory = 95  # while 1A's agent works: it goes on, 1B must wait
        wait_for(lambda: [c for c in project.agent_calls() if c["event"] == "end"], "1A's agent to finish")
        wait_for(lambda: project.status_json()["run"]["hold_reason"] == held, "the second hold")
        time.sleep(0.5)
        assert agent_started(project, "1B") == []
        assert [c["exit"] for c in project.agent_calls() if c["event"] == "end"] == [0]

        probe.memory = 50
        runner.join(timeout=60)
    finally:
        probe.memory = 50
        runner.join(timeout=60)
    assert outcome == {"code": 0}
    assert project.statuses() == {"1A": "merged", "1B": "merged"}
    assert project.status_json()["run"]["hold_reason"] is None
    log = next((project.root / "logs").glob("orchestrator_*.log")).read_text()
    assert log.count(f"holding new agent starts: {held}") == 2 and log.count("resources recovered") == 2


def test_a_run_short_of_disk_starts_no_agent_and_fails_after_max_wait(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    project.configure(monitor={"min_free_disk_gb": 100000, "max_wait_minutes": 0.15, "interval_seconds": 0.2})
    began = time.monotonic()
    with running(project) as runner:
        text = wait_for(
            lambda: (t := project.run("status").stdout) and "holding new agent starts" in t and t, "the hold"
        )
        assert "free disk" in text and "below monitor.min_free_disk_gb 100000" in text
        assert runner.wait(timeout=60) == 1
    assert time.monotonic() - began >= 9  # 0.15 min
    assert project.agent_calls() == []
    said = output(project.root)
    assert "holding new agent starts: free disk" in said
    for mid in ("1A", "1B"):
        record = milestone(project, mid)
        assert record["status"] == "failed"
        assert str(record["reason"]).startswith("resources: did not recover within 0.15 min: free disk")
        assert f"{mid} ........ failed" in said
    assert "holding" not in project.run("status").stdout  # the hold ended with the run


def test_monitor_settings_are_checked(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    for bad, key in (
        ({"interval_seconds": 0}, "monitor.interval_seconds"),
        ({"max_cpu_percent": 150}, "monitor.max_cpu_percent"),
        ({"max_wait_minutes": -1}, "monitor.max_wait_minutes"),
        ({"min_free_disk_gb": "lots"}, "monitor.min_free_disk_gb"),
    ):
        project.configure(monitor=bad)
        out = project.run("--validate-only")
        assert out.returncode == 2 and key in out.stderr, (bad, out.stderr)
    project.configure(monitor={"max_wait_minutes": 0.5, "interval_seconds": 0.25})
    assert project.run("--validate-only").returncode == 0


# ---------------------------------------------------------------- logs/metrics.json


def test_metrics_json_is_valid_at_every_instant_and_holds_the_figures(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    project.configure(
        monitor={"interval_seconds": 0.1, "max_cpu_percent": 100, "max_memory_percent": 100, "min_free_disk_gb": 0}
    )
    usage = {"input_tokens": 1200, "output_tokens": 300}
    result = {"type": "result", "is_error": False, "result": "ok", "total_cost_usd": 0.05, "usage": usage}
    project.script(
        {
            "1A": {"implement": [{"print": [json.dumps(result)], "sleep": 1.5, "write": {"1A.txt": "a"}}]},
            "1B": {"implement": [{"sleep": 1.5, "write": {"1B.txt": "b"}}]},
        }
    )
    path = project.root / "logs" / "metrics.json"
    reads, broken = [0], []
    done = threading.Event()

    def read_all_the_time() -> None:
        while not done.is_set():
            try:
                json.loads(path.read_text())
                reads[0] += 1
            except FileNotFoundError:
                pass
            except ValueError as e:
                broken.append(str(e))

    reader = threading.Thread(target=read_all_the_time, daemon=True)
    reader.start()
    runner = start(project.root)
    try:
        assert runner.wait(timeout=90) == 0, output(project.root)
    finally:
        done.set()
        reader.join(timeout=10)
        runner.kill()
    assert broken == [] and reads[0] > 20

    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["interval_seconds"] == 0.1
    samples = data["samples"]
    assert len(samples) >= 10
    keys = {"time", "cpu_percent", "memory_percent", "disk_free_gb", "agents_running", "runner_rss_mb", "agent_rss_mb"}
    assert all(s.keys() == keys for s in samples)
    both = [s for s in samples if s["agents_running"] == 2]
    assert both and all(set(s["agent_rss_mb"]) == {"1A", "1B"} for s in both)
    for mid in ("1A", "1B"):  # a python agent's tree (0 once it has exited, until the runner hears of it)
        assert any(s["agent_rss_mb"][mid] > 3 for s in both)
    assert [s["time"] for s in samples] == sorted(s["time"] for s in samples)
    peaks = data["peaks"]
    assert peaks["agents_running"] == 2 and peaks["agent_rss_mb"]["1A"] > 3 and peaks["runner_rss_mb"] > 10
    one_a = data["milestones"]["1A"]
    assert one_a["status"] == "merged" and one_a["duration_seconds"] >= 1.5
    assert one_a["attempts"] == 1 and one_a["review_rounds"] == 1
    assert (one_a["cost_usd"], one_a["input_tokens"], one_a["output_tokens"]) == (0.05, 1200, 300)


class FakeMonitor:
    def __init__(self) -> None:
        self.probe, self.t = FakeProbe(), FakeTime()
        self.guard = monitor(self.probe, self.t)

    def sample(self) -> advanced.Sample:
        self.t.now += 1
        return self.guard.sample()

    def agent_rss(self, pids: dict[str, int]) -> dict[str, int]:
        return {mid: pid * MB for mid, pid in pids.items()}

    def own_rss(self) -> int:
        return 42 * MB


def test_metrics_keep_a_rolling_window_and_the_peaks_of_the_whole_run(tmp_path: Path) -> None:
    fake = FakeMonitor()
    records: dict[str, MilestoneState] = {}
    clock = [5000.0]
    sampler = MetricsSampler(tmp_path / "metrics.json", 10, fake, lambda: records, clock=lambda: clock[0], window=5)
    for n in range(20):
        clock[0] += 10
        fake.probe.disk = 100 - n
        pid = 100 if n == 3 else 7
        records["1A"] = MilestoneState("1A", 1, "A", status="running", agent_pid=pid, started_at=5000, attempts=2)
        written = sampler.record()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(written))
    assert len(on_disk["samples"]) == 5 and on_disk["window"] == 5
    assert [s["time"] for s in on_disk["samples"]] == [5160, 5170, 5180, 5190, 5200]
    assert on_disk["peaks"]["agent_rss_mb"] == {"1A": 100} and on_disk["peaks"]["disk_free_gb_min"] == 81
    assert on_disk["milestones"]["1A"]["duration_seconds"] == 200 and on_disk["milestones"]["1A"]["attempts"] == 2
    assert len((tmp_path / "metrics.json").read_bytes()) < 4000

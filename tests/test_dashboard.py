"""`watch` and `status` as people see them: driven in a real terminal (tmux) during real runs."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ORCHESTRATOR, Project
from live import agent_started, milestone, running, wait_for

SGR_COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-7]|4[0-7]|38;5;\d+|48;5;\d+|9[0-7])m")
COUNTDOWN = re.compile(r"\(in (?:(\d+)h)?(\d\d)m(\d\d)s\)")


class Tmux:
    """A private tmux server (its own socket, no user config) for one test."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        argv = ("tmux", "-f", "/dev/null", "-S", str(self.socket), *args)
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=15).stdout

    def open(self, name: str, cwd: Path, *command: str, env: dict[str, str] | None = None) -> None:
        """A 150x40 window running `command` (kept on screen after it exits)."""
        assignments = [f"{k}={v}" for k, v in {"TZ": "UTC", **(env or {})}.items()]
        line = (
            shlex.join(("env", "-u", "NO_COLOR", "-u", "COLUMNS", "-u", "LINES", *assignments, *command))
            + "; sleep 600"
        )
        self.tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "40", "-c", str(cwd), line)

    def screen(self, name: str, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", name)

    def wait_screen(self, name: str, *texts: str, timeout: float = 30) -> str:
        def shown() -> str:
            screen = self.screen(name)
            return screen if all(t in screen for t in texts) else ""

        return wait_for(shown, f"{texts} on screen", timeout)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    server = Tmux(tmp_path / "tmux.sock")
    yield server
    subprocess.run(("tmux", "-S", str(server.socket), "kill-server"), capture_output=True, timeout=15)


def orchestrator(*args: str) -> tuple[str, ...]:
    return (sys.executable, str(ORCHESTRATOR), *args)


def result_event(cost: float) -> str:
    return json.dumps(
        {"type": "result", "subtype": "success", "is_error": False, "result": "ok", "total_cost_usd": cost}
    )


def row(screen: str, mid: str) -> str:
    return next(line for line in screen.splitlines() if line.strip().startswith(f"{mid} "))


def test_watch_in_a_terminal_follows_a_run_paused_by_a_usage_limit(project: Project, tmux: Tmux) -> None:
    project.milestone("1A", "Word counting", estimate="10 minutes")
    go = project.root.parent / "go"  # 1B hits the limit only once 1A is done and 1C runs
    project.milestone(
        "1B", "Line counting", estimate="20 minutes", entry=[f"Go (`until [ -f {go} ]; do sleep 0.1; done`)"]
    )
    project.milestone("1C", "Histogram", estimate="1 hour")
    project.milestone("2A", "Report", deps=["1A", "1B", "1C"], estimate="45 minutes")
    project.commit_plan()
    reset = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=2)
    limit = f"You've hit your session limit · resets {reset.strftime('%-I%p').lower()} (UTC)"
    project.script(
        {
            "1A": {"implement": [{"print": ["counting words", result_event(0.42)], "write": {"1A.txt": "a"}}]},
            "1B": {"implement": [{"print": [limit], "exit": 1}]},
            "1C": {"implement": [{"print": ["running the histogram tests"], "hang": True}]},
        }
    )
    with running(project, env={"TZ": "UTC"}):
        wait_for(lambda: milestone(project, "1A")["status"] == "done", "1A done")
        wait_for(lambda: milestone(project, "1C")["last_line"], "1C's last line")
        go.write_text("")
        until = wait_for(lambda: project.status_json()["run"]["paused_until"], "the usage-limit pause")
        assert reset.timestamp() <= until < reset.timestamp() + 300
        tmux.open("watch", project.root, *orchestrator("watch", "--refresh", "0.5"))
        first = tmux.wait_screen("watch", "Claude Code Orchestrator", "waiting for usage limit", "Stage 2")

        assert "0/4 merged" in first and "run running" in first
        shown = dt.datetime.fromtimestamp(until, dt.UTC).strftime("%H:%M")
        assert f"resets {shown} (in " in first and "You've hit your session limit" in first
        assert "done" in row(first, "1A")
        assert re.search(r"\ds / 10m\s+1\s+1\s+\$0\.42", row(first, "1A")), row(first, "1A")
        assert "running (waits: usage limit)" in row(first, "1B") and "/ 20m" in row(first, "1B")
        pid = agent_started(project, "1C")[0]["pid"]
        assert "running (implement)" in row(first, "1C") and f" {pid} " in row(first, "1C")
        assert "running the histogram tests" in row(first, "1C")
        assert "pending" in row(first, "2A") and "- / 45m" in row(first, "2A")

        def ticked() -> str:
            screen = tmux.screen("watch")
            return screen if _seconds_left(screen) < _seconds_left(first) else ""

        later = wait_for(ticked, "the countdown to go down")
        assert abs(_seconds_left(later) - (until - time.time())) < 5

        coloured = tmux.screen("watch", escapes=True)
        assert "\x1b[32mdone" in coloured and "\x1b[36mrunning" in coloured  # green done, cyan running
        assert "\x1b[43m" in coloured  # the yellow banner
    after = tmux.wait_screen("watch", "run interrupted")  # the runner is gone: the view says so, live
    assert "interrupted" in row(after, "1C") and "waiting for usage limit" in after  # the pause is still in force


def _seconds_left(screen: str) -> int:
    found = COUNTDOWN.search(screen)
    assert found, screen
    hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def test_watch_and_status_work_with_no_run_going(project: Project, tmux: Tmux) -> None:
    project.milestone("1A", "Alpha", estimate="2 hours")
    project.milestone("2A", "Beta", deps=["1A"])
    project.commit_plan()
    once = project.run("watch", "--once", env={"NO_COLOR": ""})  # a pipe, not a terminal
    assert once.returncode == 0, once.stderr
    assert "0/2 merged · run idle" in once.stdout and "\x1b[" not in once.stdout
    assert "pending" in once.stdout and "~2h" in once.stdout
    tmux.open("watch", project.root, *orchestrator("watch", "--refresh", "0.3"))
    screen = tmux.wait_screen("watch", "run idle", "Stage 2")
    assert "pending" in row(screen, "1A") and "- / 2h" in row(screen, "1A")
    assert not (project.root / ".orchestrator").exists()  # watching writes nothing
    assert project.run("--milestone", "1A").returncode == 0
    screen = tmux.wait_screen("watch", "1/2 merged", "run finished")
    assert "merged" in row(screen, "1A")


@pytest.mark.parametrize(
    ("args", "env", "colour"),
    [
        (("status",), {}, True),
        (("status", "--no-color"), {}, False),
        (("status",), {"NO_COLOR": "1"}, False),
        (("watch", "--once"), {}, True),
        (("watch", "--once", "--no-color"), {}, False),
        (("watch", "--once"), {"NO_COLOR": "1"}, False),
    ],
)
def test_colour_only_in_a_terminal_and_never_when_asked_not_to(
    project: Project, tmux: Tmux, args: tuple[str, ...], env: dict[str, str], colour: bool
) -> None:
    project.milestone("1A", "Alpha")
    project.milestone("1B", "Beta", exit_checks=["(`false`)"])
    project.commit_plan()
    project.configure(review={"enabled": False, "max_rounds": 1})
    assert project.run().returncode == 1  # 1A done, 1B failed: two colours to show
    tmux.open("view", project.root, *orchestrator(*args), env=env)
    tmux.wait_screen("view", "failed")
    screen = tmux.screen("view", escapes=True)
    assert bool(SGR_COLOUR.search(screen)) is colour, screen
    piped = project.run(*args, env=env)
    assert "\x1b[" not in piped.stdout and "failed" in piped.stdout


def test_status_lines_show_what_each_milestone_is_doing(project: Project) -> None:
    project.milestone("1A", "Alpha", estimate="10 minutes")
    project.milestone("1B", "Beta")
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"print": ["reading the task", "planning", "editing alpha.py"], "hang": True}]},
            "1B": {"implement": [{"write": {"1B.txt": "b"}}]},
        }
    )
    with running(project):
        wait_for(lambda: milestone(project, "1B")["status"] == "done", "1B done")

        def with_last_line() -> str:
            text = project.run("status").stdout
            return text if "editing alpha.py" in text else ""

        text = wait_for(with_last_line, "1A's last line")
        pid = agent_started(project, "1A")[0]["pid"]
        assert re.search(rf"1A Alpha \.+ running \(implement\)  \d+s / 10m · attempt 1 · pid {pid}", text), text
        assert "└ editing alpha.py" in text
        assert re.search(r"1B Beta \.+ done  \d+s / 10m · attempt 1 · review 1", text), text
    text = project.run("status").stdout
    assert "run interrupted" in text and "1A Alpha" in text

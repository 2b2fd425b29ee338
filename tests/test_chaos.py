"""The chaos test: SIGKILL the runner at 20 seeded random moments, `--resume` after each, same end result.

Every agent appends its deliverable, and every start is a line in the fake agent's log: an agent
started twice would show in both. Agents outlive the runner and a resume takes them over, so each
milestone's agent is started exactly once per role (bench/chaos.py: 200 kills under CPU load).

Most kills come a random moment after the runner's k-th line of output (k and the moment drawn
from SEED), so they land wherever the runner is: agents running, commits, checks, reviews,
merges, state writes, cleanup, its own start. Half of those kill the runner's whole process
group, its git commands with it (what stopping a container does); agents run in their own
groups and live on, as they would. The rest are aimed through the runner's fault hook
(orchestrator_lib/faults.py) at the places a timer hits least often: the stage's merges, the instant
before the base branch moves, the instant before a state change commits. The schedule is
reproducible; the timing on the machine is not, and the invariants must hold either way.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from conftest import ORCHESTRATOR, Project

SEED = 5
KILLS = 20
PLAN = {  # three stages, dependencies across them
    "1A": (),
    "1B": (),
    "1C": (),
    "1D": (),
    "2A": ("1A",),
    "2B": ("1B", "1C"),
    "2C": (),
    "2D": ("1D",),
    "3A": ("2A", "2B"),
    "3B": ("2C",),
    "3C": ("1D",),
    "3D": ("2D",),
}
# Aimed kills, at seeded places in the schedule: "point:kill:n" dies the n-th time the runner
# gets to that point; state-write's n is drawn from the seed too.
AIMED = ("merge:kill:1", "merge:kill:2", "move-base:kill:1", "state-write:kill:{n}", "state-write:kill:{n}")
WAIT = 30.0  # the bound on every run


class Kill(NamedTuple):
    after_lines: int  # the runner's lines of output before the kill is armed
    delay: float  # then this many seconds
    fault: str  # or, instead: ORCHESTRATOR_FAULT kills the runner at that point
    group: bool = False  # the runner's process group (its git commands too), not the runner alone


def schedule(rng: random.Random, count: int = KILLS) -> list[Kill]:
    aimed = dict(zip(rng.sample(range(1, count - 2), len(AIMED)), AIMED, strict=True))
    kills: list[Kill] = []
    for n in range(count):
        if n in aimed:
            kills.append(Kill(0, 0.0, aimed[n].format(n=rng.randint(5, 40))))
        else:
            kills.append(Kill(rng.randint(0, 4), rng.uniform(0.0, 0.4), "", rng.random() < 0.5))
    return kills


def chaos_plan(p: Project) -> None:
    for mid, deps in PLAN.items():
        p.milestone(mid, f"Chaos {mid}", deps=deps, exit_checks=[f"Its file exists (`test -f {mid}.txt`)"])
    p.configure(max_parallel_tasks=2)
    p.commit_plan()
    p.script(
        {
            **{
                mid: {
                    "implement": [
                        {
                            "append": {f"{mid}.txt": f"work of {mid}\n"},  # twice if started twice
                            "write": {f"src/{mid.lower()}.py": f"ID = {mid!r}\n"},
                            "sleep_random": [0.05, 0.5],
                        }
                    ]
                }
                for mid in PLAN
            },
            "*": {"review": [{"sleep_random": [0.0, 0.3], "verdict": "pass"}]},
        }
    )


class Runner:
    """The runner as a real subprocess, its output read as it comes."""

    def __init__(self, p: Project, resume: bool, fault: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            (sys.executable, str(ORCHESTRATOR), *(["--resume"] if resume else [])),
            cwd=p.root,
            env={**os.environ, "NO_COLOR": "1", "ORCHESTRATOR_FAULT": fault},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group: the runner and its git commands
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def kill_after(self, kill: Kill) -> int:
        deadline = time.monotonic() + WAIT
        if not kill.fault:
            while len(self.lines) < kill.after_lines and self.process.poll() is None:
                assert time.monotonic() < deadline, "the runner stopped making progress"
                time.sleep(0.01)
            time.sleep(kill.delay)
            self._sigkill(kill.group)
        code = self.process.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        return code

    def _sigkill(self, group: bool) -> None:
        """No handler runs, nothing is cleaned up."""
        if not group:
            self.process.kill()
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had finished


def where(lines: list[str], kill: Kill) -> str:
    """Roughly where the runner was when it died, from the last thing it said."""
    if kill.fault:
        return kill.fault.split(":")[0]
    return _phase(lines) + (" (with git)" if kill.group else "")


def _phase(lines: list[str]) -> str:
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    if ": merging " in last:
        return "merging"
    if " merged into " in last:
        return "cleanup"
    if last.startswith("stage ") or last.endswith((" implement", " check", " review", " prepare")):
        return "agents"
    if " ........ " in last:
        return "between tasks"
    return "start"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_sigkill_at_random_moments_then_resume_gives_the_same_result(project: Project) -> None:
    chaos_plan(project)
    started = time.monotonic()
    landed = kill_and_resume(project, schedule(random.Random(SEED)))
    elapsed = time.monotonic() - started
    assert_the_plan_landed_once(project)
    survived = sum(not w.startswith("missed") for w in landed)
    places = ", ".join(f"{w} {landed.count(w)}" for w in sorted(set(landed)))
    print(f"\nchaos: seed {SEED}: {survived}/{KILLS} kills landed and were survived ({places}); {elapsed:.1f}s")
    assert survived >= KILLS // 2, f"too many runs had finished before their kill: {landed}"


def kill_and_resume(project: Project, kills: list[Kill]) -> list[str]:
    """Run, kill, resume ... then a last resume to the end; where each kill landed."""
    landed: list[str] = []
    for n, kill in enumerate(kills):
        runner = Runner(project, resume=n > 0, fault=kill.fault)
        code = runner.kill_after(kill)
        output = "\n".join(runner.lines)
        assert code in (-9, 0), f"kill {n}: the runner failed on its own (exit {code}):\n{output}"
        landed.append(where(runner.lines, kill) if code == -9 else "missed (the run had finished)")
        trailers = project.trailers()
        assert len(trailers) == len(set(trailers)), f"kill {n}: a milestone was merged twice: {trailers}"
    final = project.run("--resume", timeout=WAIT * 3)
    assert final.returncode == 0, final.stdout + final.stderr
    return landed


def agent_starts(p: Project) -> dict[tuple[str, str], int]:
    """How often each (milestone, role) agent was started."""
    starts = [(c["milestone"], c["role"]) for c in p.agent_calls() if c["event"] == "start"]
    return {key: starts.count(key) for key in sorted(set(starts))}


def assert_the_plan_landed_once(project: Project) -> None:
    starts = agent_starts(project)
    assert {k: n for k, n in starts.items() if n != 1} == {}, "every agent is started exactly once"
    assert sorted(project.trailers()) == sorted(PLAN), "every milestone is merged exactly once"
    assert sorted(merge_commits(project)) == sorted(PLAN)
    for mid in PLAN:
        assert project.show(f"{mid}.txt") == f"work of {mid}\n"
        assert project.show(f"src/{mid.lower()}.py") == f"ID = {mid!r}\n"
    assert_tasks_file_agrees_with_git(project)
    assert project.git("status", "--porcelain").strip() == "", "the checkout is left clean"
    assert not [c["pid"] for c in project.agent_calls() if alive(c["pid"])], "an agent is left running"
    assert project.git("worktree", "list", "--porcelain").count("worktree ") == 1, "a worktree is left"
    assert not list((project.root / ".worktree").glob("*")), "a folder is left in .worktree/"
    assert project.branches() == [] and project.branches("orchestrator/*") == []
    assert not (project.root / ".orchestrator" / "lock").exists(), "the lock is left behind"


def assert_tasks_file_agrees_with_git(p: Project) -> None:
    for text in ((p.root / "TASKS.md").read_text(), p.show("TASKS.md")):
        rows = tasks_rows(text)
        for mid, sha in merge_commits(p).items():
            assert rows[mid]["Status"] == "merged", rows[mid]
            assert rows[mid]["Commit"] and sha.startswith(rows[mid]["Commit"]), (rows[mid], sha)


def merge_commits(p: Project) -> dict[str, str]:
    """Milestone id -> the commit on main carrying its `Milestone:` trailer."""
    out = p.git("log", "--first-parent", "--format=%H %(trailers:key=Milestone,valueonly,separator=%x2C)", "main")
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ids = line.partition(" ")
        found.update({mid.strip(): sha for mid in ids.split(",") if mid.strip()})
    return found


def tasks_rows(text: str) -> dict[str, dict[str, str]]:
    """TASKS.md's table rows by milestone id, keyed by the header's column names."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells[:1] == ["ID"]:
            header = cells
        elif cells and header and not cells[0].startswith("-"):
            rows[cells[0]] = dict(zip(header, cells, strict=False))
    return rows

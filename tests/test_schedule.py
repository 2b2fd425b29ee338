"""Dependencies mode (issue 12): readiness, the merge queue, failure isolation, predicted conflicts,
--resume after SIGKILL and --stage N. Real repositories, real runner processes, the scripted fake agent;
what happened is read from the agents' own start/end records and from git, never from sleeps."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from typing import Any

from conftest import ORCHESTRATOR, Project
from test_chaos import assert_the_plan_landed_once, chaos_plan, kill_and_resume, schedule
from test_resilience import WAIT, alive, implement_calls, running, wait_for

ORIGINAL = "line 1\noriginal\nline 3\n"


def starts(p: Project, role: str = "implement") -> dict[str, list[dict[str, Any]]]:
    """Milestone -> its agent runs of that role (start and end records joined by pid)."""
    runs: dict[int, dict[str, Any]] = {}
    for call in p.agent_calls():
        if call["role"] == role:
            runs.setdefault(call["pid"], {}).update(call)
    found: dict[str, list[dict[str, Any]]] = {}
    for run in runs.values():
        found.setdefault(run["milestone"], []).append(run)
    return found


def merge_trailers(p: Project) -> list[str]:
    return p.trailers("main")


def skewed(p: Project, slow: float = 4.0) -> None:
    """1A slow; 1B, 1C fast; 2A after 1B, 2B after 1C; 3A after everything."""
    plan = {"1A": (), "1B": (), "1C": (), "2A": ("1B",), "2B": ("1C",), "3A": ("1A", "1B", "1C", "2A", "2B")}
    for mid, deps in plan.items():
        p.milestone(mid, deps=deps)
    p.configure(schedule="dependencies", review={"enabled": False})
    p.commit_plan()
    p.script(work(plan, slow))


def work(plan: Any, slow: float, **extra: dict[str, Any]) -> dict[str, Any]:
    """Each milestone writes its own file: 1A in `slow` seconds, the others in 0.2 s."""
    script = {mid: {"implement": [{"write": {f"{mid}.txt": f"{mid}\n"}, "sleep": 0.2}]} for mid in plan}
    script["1A"]["implement"][0]["sleep"] = slow
    for mid, entry in extra.items():
        script[mid]["implement"][0].update(entry)
    return script


def test_a_stage_2_milestone_starts_and_merges_before_the_slow_stage_1_milestone_ends(project: Project) -> None:
    skewed(project)
    # 1A ends only once 2B's file is in the user's checkout, i.e. 2B is merged (bounded: a barrier
    # between stages would make 1A wait the full 60 s, and the start/end times below would say so).
    plan = ["1A", "1B", "1C", "2A", "2B", "3A"]
    project.script(work(plan, 0.0, **{"1A": {"wait_for_file": [str(project.root / "2B.txt"), 60]}}))
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    runs = {mid: r[0] for mid, r in starts(project).items()}
    slow_end = runs["1A"]["end"]
    assert runs["2A"]["start"] < slow_end and runs["2B"]["start"] < slow_end
    assert runs["3A"]["start"] > slow_end  # it depends on 1A: it waited for its merge
    assert slow_end - runs["1A"]["start"] < 50  # it did not wait out its bound
    trailers = merge_trailers(project)
    assert sorted(trailers) == ["1A", "1B", "1C", "2A", "2B", "3A"]  # each merged exactly once
    order = list(reversed(trailers))  # git log is newest first
    assert order.index("1C") < order.index("2B") < order.index("1A") < order.index("3A")
    assert order.index("1B") < order.index("2A")
    assert all(len(r) == 1 for r in starts(project).values())  # every agent ran once
    assert {m["status"] for m in project.status_json()["milestones"]} == {"merged"}
    tasks = project.show("TASKS.md")
    assert "Progress: 6/6 merged" in tasks


def test_a_failed_milestone_blocks_only_its_dependents(project: Project) -> None:
    for mid, deps in {"1A": (), "1B": (), "2A": ("1A",), "2B": ("1B",), "3A": ("2B",), "3B": ("2A",)}.items():
        project.milestone(mid, deps=deps)
    project.configure(schedule="dependencies", review={"enabled": False})
    project.commit_plan()
    project.script({"1B": {"implement": [{"exit": 1, "print": ["cannot do it"]}]}})
    out = project.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert sorted(merge_trailers(project)) == ["1A", "2A", "3B"]
    statuses = project.statuses()
    assert statuses == {
        "1A": "merged",
        "1B": "failed",
        "2A": "merged",
        "2B": "blocked",
        "3A": "blocked",
        "3B": "merged",
    }
    reasons = {m["id"]: m["reason"] for m in project.status_json()["milestones"]}
    assert reasons["2B"] == "waits for 1B, which failed" and reasons["3A"] == "waits for 1B, which failed"
    assert "1B (failed)" in out.stdout and "blocked, waiting for them: 2B, 3A" in out.stdout
    assert set(starts(project)) == {"1A", "1B", "2A", "3B"}  # nothing blocked was started
    tasks = (project.root / "TASKS.md").read_text()
    assert "waits for 1B, which failed" in tasks
    # after a fix, --resume continues the graph from where it stood
    project.script({})
    again = project.run("--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(merge_trailers(project)) == ["1A", "1B", "2A", "2B", "3A", "3B"]
    assert len(starts(project)["1A"]) == 1  # merged work is never redone


def conflicting(p: Project, update: dict[str, Any], resolve: dict[str, Any], review: bool = False) -> None:
    """1A and 1B change the same line; 1B finishes later, so its merge is predicted to conflict."""
    (p.root / "shared.txt").write_text(ORIGINAL)
    p.milestone("1A", tasks="- Change `shared.txt`.")
    p.milestone("1B", tasks="- Change `shared.txt`.")
    p.configure(schedule="dependencies", review={"enabled": review})
    p.commit_plan()
    p.script(
        {
            "1A": {"implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1A")}}]},
            "1B": {
                "implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1B")}, "sleep": 1.5}],
                "update": [update],
            },
            "*": {"resolve": [resolve]},
        }
    )


def test_a_predicted_conflict_goes_to_the_milestones_own_session_first(project: Project) -> None:
    conflicting(project, {"resolve": "both"}, {"resolve": "fail"}, review=True)
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1B would conflict with main in shared.txt: its own session merges main" in out.stdout
    (update,) = starts(project, "update")["1B"]
    assert update["cwd"] == str(project.root / ".worktree" / "1B")  # its own worktree
    assert "conflict with main in: shared.txt" in update["prompt"]
    assert starts(project, "resolve") == {}  # the resolver was not needed
    reviews = sorted(r["start"] for r in starts(project, "review")["1B"])
    assert len(reviews) == 2 and reviews[1] > update["end"]  # re-reviewed after the merge of main
    assert project.show("shared.txt") == "line 1\nfrom 1B\nfrom 1A\nline 3\n"  # its side first: it merged main
    assert "Merge main into milestone/1B" in project.git("log", "--format=%s", "main").splitlines()
    assert sorted(merge_trailers(project)) == ["1A", "1B"]


def test_then_the_resolver_then_blocked_with_the_branch_kept(project: Project) -> None:
    conflicting(project, {"resolve": "leave"}, {"resolve": "both"})
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(starts(project, "update")) == {"1B"} and set(starts(project, "resolve"))  # session, then resolver
    assert "the resolver fixed the conflicts in shared.txt" in out.stdout
    assert project.show("shared.txt") == "line 1\nfrom 1A\nfrom 1B\nline 3\n"


def test_a_conflict_nobody_resolves_blocks_the_milestone_and_keeps_its_branch(project: Project) -> None:
    conflicting(project, {"resolve": "leave"}, {"resolve": "fail"})
    project.milestone("2A", deps=["1B"])
    project.milestone("2B", deps=["1A"])
    project.commit_plan("more")
    out = project.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert sorted(merge_trailers(project)) == ["1A", "2B"]
    statuses = project.statuses()
    assert statuses["1B"] == "blocked" and statuses["2A"] == "blocked"
    assert "milestone/1B" in project.branches()
    assert project.show("shared.txt", "milestone/1B") == ORIGINAL.replace("original", "from 1B")  # put back
    assert project.show("shared.txt") == ORIGINAL.replace("original", "from 1A")


def test_stage_n_in_dependencies_mode(project: Project) -> None:
    for mid, deps in {"1A": (), "1B": (), "2A": ("1A",), "2B": ("1B",)}.items():
        project.milestone(mid, deps=deps)
    project.configure(review={"enabled": False})
    project.commit_plan()
    refused = project.run("--schedule", "dependencies", "--stage", "2")
    assert refused.returncode == 2 and "stage 2 depends on 1A, 1B, not merged yet" in refused.stderr
    assert project.run("--schedule", "dependencies", "--milestone", "1A").returncode == 0
    still = project.run("--schedule", "dependencies", "--stage", "2")
    assert still.returncode == 2 and "depends on 1B, not merged yet" in still.stderr
    assert project.run("--schedule", "dependencies", "--milestone", "1B").returncode == 0
    out = project.run("--schedule", "dependencies", "--stage", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(merge_trailers(project)) == ["1A", "1B", "2A", "2B"]


def test_an_old_git_is_refused_with_a_clear_message(project: Project, tmp_path: Any) -> None:
    project.milestone("1A")
    project.commit_plan()
    shim = tmp_path / "bin"
    shim.mkdir()
    real = subprocess.run(("sh", "-c", "command -v git"), capture_output=True, text=True, check=True).stdout.strip()
    (shim / "git").write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && echo "git version 2.34.1" && exit 0\nexec {real} "$@"\n'
    )
    (shim / "git").chmod(0o755)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    out = project.run("--schedule", "dependencies", env=env)
    assert out.returncode == 2
    assert "git 2.34 cannot predict merge conflicts" in out.stderr and "needs git 2.38 or newer" in out.stderr
    assert not (project.root / ".orchestrator").exists()  # nothing written
    assert project.run("--schedule", "stages", env=env).returncode == 0  # stages mode does without


def test_resume_mid_graph_after_sigkill_merges_each_milestone_exactly_once(project: Project) -> None:
    skewed(project, slow=3.0)
    project.script(work(["1A", "1B", "1C", "2A", "2B", "3A"], 3.0, **{"2A": {"kill_parent": True}}))
    runner = subprocess.Popen(
        (sys.executable, str(ORCHESTRATOR)),
        cwd=project.root,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runner.communicate(timeout=60)
    assert runner.returncode == -signal.SIGKILL
    before = merge_trailers(project)
    assert "3A" not in before  # killed mid-graph
    out = project.run("--resume", timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    trailers = merge_trailers(project)
    assert sorted(trailers) == ["1A", "1B", "1C", "2A", "2B", "3A"]  # exactly once each
    assert len(starts(project)["1A"]) == 1  # the slow agent outlived the runner and was taken over


def test_chaos_in_dependencies_mode_every_milestone_merges_exactly_once(project: Project) -> None:
    """tests/test_chaos.py's plan and kills (fewer, another seed), with merges running beside the agents."""
    chaos_plan(project)
    project.configure(max_parallel_tasks=2, schedule="dependencies")
    project.commit_plan("dependencies mode")
    landed = kill_and_resume(project, schedule(random.Random(7), count=8))
    assert_the_plan_landed_once(project)
    assert sum(not w.startswith("missed") for w in landed) >= 4, landed


def test_a_skewed_plan_with_a_failure_and_a_conflict_reviews_on(project: Project) -> None:
    """Everything at once, review on: 1A slow; 1B and 1C clash in shared.txt; 1D fails; 2D waits on 1D."""
    (project.root / "shared.txt").write_text(ORIGINAL)
    plan = {"1A": (), "1B": (), "1C": (), "1D": (), "2A": ("1A",), "2B": ("1B", "1C"), "2D": ("1D",), "3A": ("2D",)}
    for mid, deps in plan.items():
        project.milestone(mid, deps=deps)
    project.configure(schedule="dependencies", max_parallel_tasks=3)
    project.commit_plan()
    script = work(list(plan), 2.0)
    script["1B"]["implement"][0]["write"]["shared.txt"] = ORIGINAL.replace("original", "from 1B")
    script["1C"]["implement"][0].update(write={"shared.txt": ORIGINAL.replace("original", "from 1C")}, sleep=1.0)
    script["1D"]["implement"][0].update(exit=3)
    project.script(script)
    out = project.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert sorted(merge_trailers(project)) == ["1A", "1B", "1C", "2A", "2B"]
    statuses = project.statuses()
    assert statuses["1D"] == "failed" and statuses["2D"] == "blocked" and statuses["3A"] == "blocked"
    assert "1C would conflict with main in shared.txt" in out.stdout
    assert set(starts(project, "update")) == {"1C"}  # its own session (the default agent leaves the markers)
    (resolver,) = [run for runs in starts(project, "resolve").values() for run in runs]  # then the resolver
    assert "conflicts in: shared.txt" in resolver["prompt"]
    shared = project.show("shared.txt")
    assert "from 1B" in shared and "from 1C" in shared and "<<<<<<<" not in shared
    assert "1D (failed)" in out.stdout and "2D, 3A" in out.stdout


def test_a_user_edit_that_stops_the_base_moving_ends_the_run_after_the_running_agents(project: Project) -> None:
    (project.root / "app.txt").write_text("v1\n")
    project.milestone("1A", tasks="- Change `app.txt`.")
    project.milestone("1B")
    project.configure(schedule="dependencies", review={"enabled": False})
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"write": {"app.txt": "v2 by agent\n"}}]},
            "1B": {
                "implement": [
                    {
                        "wait_for_file": [str(project.root / ".worktree" / "_integration" / "app.txt"), 30],
                        "write": {"1B.txt": "1B\n"},
                    }
                ]
            },
        }
    )
    (project.root / "app.txt").write_text("my local edit\n")
    head = project.git("rev-parse", "main").strip()
    out = project.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert "your uncommitted changes in app.txt" in out.stdout and "orchestrator/1A" in out.stdout
    assert (project.root / "app.txt").read_text() == "my local edit\n"
    assert project.git("rev-parse", "main").strip() == head
    assert project.statuses()["1B"] == "done"  # it finished and was recorded; nothing more started or merged
    project.git("checkout", "app.txt")  # the user puts the edit away
    again = project.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(merge_trailers(project)) == ["1A", "1B"]
    assert len(starts(project)["1B"]) == 1  # done before: only merged


def test_a_branch_left_by_an_earlier_run_is_checked_against_where_it_left_the_base(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B", exit_checks=["Fixed (`test -f ok.txt`)"])
    project.configure(schedule="dependencies", review={"max_rounds": 1})
    project.commit_plan()
    project.script({"1B": {"implement": [{"write": {"1B.txt": "1B\n"}}, {"write": {"ok.txt": "ok\n"}}]}})
    first = project.run()
    assert first.returncode == 1 and project.statuses() == {"1A": "merged", "1B": "failed"}
    again = project.run("--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(merge_trailers(project)) == ["1A", "1B"]
    (review,) = starts(project, "review")["1B"]
    assert "ok.txt" in review["prompt"] and "1A.txt" not in review["prompt"]  # 1A's merge is not its change


def test_stop_in_dependencies_mode_ends_the_run_and_resume_continues_the_graph(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("2B", deps=["1B"])
    project.configure(schedule="dependencies", review={"enabled": False})
    project.commit_plan()
    project.script({"1A": {"implement": [{"write": {"half.txt": "h"}, "hang": True}, {"write": {"1A.txt": "a"}}]}})
    with running(project) as runner:
        wait_for(lambda: "2B" in merge_trailers(project), "1B and 2B to merge beside the hanging 1A")
        agent = int(implement_calls(project, "1A")[0]["pid"])
        assert project.run("stop", timeout=WAIT).returncode == 0
        assert runner.wait(timeout=WAIT) == 130
    assert not alive(agent)
    assert project.statuses() == {"1A": "interrupted", "1B": "merged", "2B": "merged"}
    out = project.run("--resume", timeout=WAIT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(merge_trailers(project)) == ["1A", "1B", "2B"]


def test_in_stages_mode_the_forecast_merges_the_clean_branches_first(project: Project) -> None:
    (project.root / "shared.txt").write_text(ORIGINAL)
    for mid in ("1A", "1B", "1C"):
        project.milestone(mid)
    project.configure(review={"enabled": False})
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1A")}}]},
            "1B": {"implement": [{"write": {"shared.txt": ORIGINAL.replace("original", "from 1B")}}]},
        }
    )
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1B is predicted to conflict in shared.txt: it merges last" in out.stdout
    assert list(reversed(merge_trailers(project))) == ["1A", "1C", "1B"]  # id order would be 1A, 1B, 1C
    (resolver,) = [run for runs in starts(project, "resolve").values() for run in runs]
    assert "conflicts in: shared.txt" in resolver["prompt"]

"""The operator's commands against real runs: stop, logs (-f), plan, serve."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from conftest import ORCHESTRATOR, Project
from live import agent_started, alive, milestone, output, running, start, wait_for


def test_stop_one_milestone_fails_only_it_and_it_can_be_rerun(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("2A", deps=["1A", "1B"])
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"sleep": 2.0, "write": {"1A.txt": "a"}}]},
            "1B": {"implement": [{"print": ["1B is busy"], "hang": True}, {"write": {"1B.txt": "b"}}]},
        }
    )
    with running(project) as runner:
        wait_for(lambda: milestone(project, "1B")["agent_pid"], "1B's agent to run")
        agent = agent_started(project, "1B")[0]
        out = project.run("stop", "1B")
        assert out.returncode == 0, out.stderr
        assert "1B" in out.stdout
        assert runner.wait(timeout=60) == 1, output(project.root)
    assert not alive(int(agent["pid"]))
    one_b, one_a = milestone(project, "1B"), milestone(project, "1A")
    assert one_b["status"] == "failed" and one_b["reason"] == "stopped by user"
    assert one_a["status"] == "done"  # it went on while 1B was stopped
    ends = [c for c in project.agent_calls() if c["milestone"] == "1A" and c["event"] == "end"]
    assert ends and ends[0]["exit"] == 0
    assert "1B failed: stopped by user" in output(project.root)
    assert project.trailers() == []  # a stage merges all or nothing

    again = project.run("--milestone", "1B")
    assert again.returncode == 0, again.stdout + again.stderr
    assert project.trailers() == ["1B"]
    assert project.statuses()["1B"] == "merged"


def test_stop_refuses_what_it_cannot_stop(project: Project) -> None:
    project.milestone("1A")
    project.milestone("2A")
    project.commit_plan()
    out = project.run("stop")
    assert out.returncode == 2 and "no run is going" in out.stderr
    project.script({"1A": {"implement": [{"hang": True}]}})
    with running(project):
        wait_for(lambda: milestone(project, "1A")["agent_pid"], "1A's agent to run")
        unknown = project.run("stop", "9Z")
        assert unknown.returncode == 2 and "no milestone 9Z" in unknown.stderr
        waiting = project.run("stop", "2A")
        assert waiting.returncode == 1 and "2A is not running (it is pending)" in waiting.stderr
        assert milestone(project, "1A")["status"] == "running"


def test_stop_the_whole_run(project: Project) -> None:
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    project.script({"*": {"implement": [{"hang": True}]}})
    with running(project) as runner:
        wait_for(lambda: len(agent_started(project, "1A") + agent_started(project, "1B")) == 2, "both agents")
        pids = [int(c["pid"]) for c in project.agent_calls()]
        out = project.run("stop")
        assert out.returncode == 0 and "asked the runner" in out.stdout
        assert runner.wait(timeout=60) == 130, output(project.root)
    assert not any(alive(pid) for pid in pids)
    assert project.statuses() == {"1A": "interrupted", "1B": "interrupted"}
    assert project.status_json()["run"]["status"] == "interrupted"


STREAM_JSON = [
    {"type": "system", "subtype": "init", "session_id": "sess-1", "model": "claude-test"},
    {"type": "assistant", "message": {"content": [{"type": "text", "text": "I will write the file now."}]}},
    {
        "type": "assistant",
        "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Write", "input": {"file_path": "1A.txt"}}]},
    },
    {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "File written"}]}},
    {"type": "result", "subtype": "success", "is_error": False, "result": "Finished 1A.", "total_cost_usd": 0.0123},
]
READABLE = [
    "[session sess-1] model claude-test",
    "I will write the file now.",
    "→ Write(file_path=1A.txt)",
    "  ↳ result: File written",
    "[done] Finished 1A. · $0.0123",
]


def _lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_logs_follow_shows_a_running_agent_as_a_readable_transcript(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    lines = [json.dumps(event) for event in STREAM_JSON]
    project.script({"1A": {"implement": [{"print": lines, "write": {"1A.txt": "a"}, "sleep": 30}]}})
    follower = subprocess.Popen(  # started before the run: everything it shows was written after
        (sys.executable, str(ORCHESTRATOR), "logs", "1A", "-f"),
        cwd=project.root,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        shown = _lines_of(follower)
        with running(project) as runner:
            seen: list[str] = []
            while not set(READABLE) <= set(seen):
                seen.append(shown.get(timeout=30))
            assert agent_started(project, "1A") and alive(int(agent_started(project, "1A")[0]["pid"]))
            assert runner.poll() is None  # still running: this was followed live
            runner.terminate()
            runner.wait(timeout=30)
        follower.wait(timeout=15)  # the run ended: following stops by itself
    finally:
        follower.kill()
    assert follower.returncode == 0
    assert [line for line in seen if not line.startswith("=====")] == READABLE
    assert not any(line.lstrip().startswith("{") for line in seen)
    assert "run has ended" in (follower.stderr.read() if follower.stderr else "")

    plain = project.run("logs", "1A")
    assert plain.returncode == 0
    assert "I will write the file now." in plain.stdout and '{"type"' not in plain.stdout
    raw = project.run("logs", "1A", "--raw")
    assert json.dumps(STREAM_JSON[1]) in raw.stdout
    missing = project.run("logs", "1B")
    assert missing.returncode == 2 and "no milestone 1B in the plan" in missing.stderr


def test_plan_shows_stages_dependencies_estimates_and_merged(project: Project) -> None:
    project.milestone("1A", "Alpha", estimate="90 minutes")
    project.milestone("1B", "Beta", estimate="2 hours")
    project.milestone("2A", "Gamma", deps=["1A", "1B"], estimate="30m")
    project.commit_plan()
    assert project.run("--milestone", "1A").returncode == 0
    out = project.run("plan")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "3 milestone(s) in 2 stage(s), 1 merged" in text
    assert "fake_agent.py" in text.split("agent:", 1)[1].splitlines()[0]
    assert text.index("Stage 1") < text.index("1A") < text.index("1B") < text.index("Stage 2") < text.index("2A")
    row = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "Alpha" in row["1A"] and "merged" in row["1A"] and "~1h30m" in row["1A"]
    assert "pending" in row["1B"] and "~2h" in row["1B"]
    assert "after 1A, 1B" in row["2A"] and "~30m" in row["2A"]
    assert "Stage 1 (2 in parallel, up to 4 at once) ~2h" in text
    whatif = project.run("--whatif")
    assert whatif.returncode == 0 and whatif.stdout == text
    state_before = sorted(p.name for p in (project.root / ".orchestrator").iterdir())
    assert project.run("plan").returncode == 0
    assert sorted(p.name for p in (project.root / ".orchestrator").iterdir()) == state_before


def test_plan_of_one_milestone_prints_the_exact_prompt(project: Project) -> None:
    project.milestone("1A", "Alpha", tasks="- Build the `alpha` module.")
    project.commit_plan()
    preview = project.run("plan", "1A")
    assert preview.returncode == 0
    assert not (project.root / ".orchestrator").exists()  # nothing was run or written
    assert project.run().returncode == 0
    call = agent_started(project, "1A")[0]
    assert preview.stdout == call["prompt"]
    unknown = project.run("plan", "7Z")
    assert unknown.returncode == 2 and "no milestone 7Z" in unknown.stderr


def _request(url: str, method: str = "GET") -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_serve_answers_read_only_http_on_localhost(project: Project) -> None:
    project.milestone("1A", "Alpha")
    project.milestone("1B", "Beta")
    project.commit_plan()
    project.script(
        {
            "1A": {"implement": [{"print": ["building alpha"], "hang": True}]},
            "1B": {"implement": [{"hang": True}]},  # nothing changes while the two views are compared
        }
    )
    server = subprocess.Popen(
        (sys.executable, str(ORCHESTRATOR), "serve", "--port", "0"),
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _lines_of(server).get(timeout=20)
        assert "http://127.0.0.1:" in first
        base = first.split("http://", 1)[1].split("/", 1)[0]
        host, port = base.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        url = f"http://{base}"
        code, _, health = _request(f"{url}/health")
        assert (code, health) == (200, {"ok": True})
        code, headers, data = _request(f"{url}/api/milestones")
        assert code == 200 and headers["Content-Type"] == "application/json"
        assert data["milestones"][0]["status"] == "pending"  # no run going: still answers
        with running(project):
            wait_for(lambda: all(m["agent_pid"] for m in project.status_json()["milestones"]), "both agents")
            agent_pid = agent_started(project, "1A")[0]["pid"]
            code, _, one = wait_for(
                lambda: (r := _request(f"{url}/api/milestones/1A"))[2].get("last_line") and r, "a last line"
            )
            assert code == 200 and one["status"] == "running" and one["agent_pid"] == agent_pid
            assert one["last_line"] == "building alpha"
            code, _, everything = _request(f"{url}/api/milestones")
            cli = project.status_json()
            assert everything.keys() == cli.keys()
            assert [(m["id"], m["status"]) for m in everything["milestones"]] == [
                (m["id"], m["status"]) for m in cli["milestones"]
            ]
        for bad in ("/api/milestones/9Z", "/api/milestones/x/1A", "/nope", "/api"):
            code, _, body = _request(url + bad)
            assert code == 404 and "error" in body, bad
        before = {**project.status_json(), "generated_at": None}
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            code, headers, body = _request(f"{url}/api/milestones/1A", method)
            assert code == 405 and headers["Allow"] == "GET" and "read-only" in body["error"], method
        assert {**project.status_json(), "generated_at": None} == before
    finally:
        server.kill()
        server.wait(timeout=10)


def test_serve_on_a_busy_port_is_a_usage_error(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    first = start(project.root, "serve", "--port", "0", log=project.root.parent / "serve1.txt")
    try:
        line = wait_for(lambda: (project.root.parent / "serve1.txt").read_text(), "the first server")
        port = line.split("127.0.0.1:", 1)[1].split("/", 1)[0]
        out = project.run("serve", "--port", port, timeout=20)
        assert out.returncode == 2 and f"127.0.0.1:{port}" in out.stderr and "--port" in out.stderr
    finally:
        first.kill()
        first.wait(timeout=10)

"""Secrets never leave the agent's environment: not in a file the runner writes, a git object,
the terminal, the status views, the HTTP API or a notification; the state and logs are private."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import ORCHESTRATOR, Project
from live import start, wait_for

from orchestrator_lib.redact import DOTENV_MARKER, SECRET_MARKER

DOTENV_KEY = "sk-ant-api03-" + "Zq9" * 14 + "-AA"  # ANTHROPIC_API_KEY in .env
DOTENV_PLAIN = "correct-horse-battery-staple"  # a .env value of no known shape
ENV_TOKEN = "plain-value-of-a-token-1234"  # MY_SERVICE_TOKEN in the runner's environment
SHAPED = "ghp_" + "x1Y2" * 9  # configured nowhere: masked by its shape
SECRETS = (DOTENV_KEY, DOTENV_PLAIN, ENV_TOKEN, SHAPED)
ENV = {"MY_SERVICE_TOKEN": ENV_TOKEN}

RECORDER = """\
import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "stdin": sys.stdin.read()}) + "\\n")
"""


def chatter(word: str) -> list[str]:
    """Every secret in the agent's output: plain lines and Claude-style JSON events."""
    event = {"type": "assistant", "message": {"content": [{"type": "text", "text": f"{word} {ENV_TOKEN}"}]}}
    return [f"{word} {DOTENV_KEY}", json.dumps(event), f"{word} {DOTENV_PLAIN} and {SHAPED}"]


def leaky_project(project: Project, **config: object) -> Path:
    project.milestone("1A", "Alpha")
    project.milestone("1B", "Beta")
    project.commit_plan()
    (project.root / ".env").write_text(f"ANTHROPIC_API_KEY={DOTENV_KEY}\nPASSPHRASE_FILE_LIKE={DOTENV_PLAIN}\n")
    recorder = project.root.parent / "notify_recorder.py"
    recorder.write_text(RECORDER)
    events = project.root.parent / "notifications.jsonl"
    project.configure(notify={"command": [sys.executable, str(recorder), str(events)]}, **config)
    project.script(
        {
            "1A": {
                "implement": [
                    {
                        "print": chatter("starting"),
                        "write": {"config.py": f"# settings\nKEY = '{DOTENV_KEY}'\n", "notes.txt": f"{SHAPED}\n"},
                        "print_after": [f"done, key {DOTENV_KEY}"],  # the last line reaches state and views
                    }
                ],
                "remediate": [
                    {
                        "write": {"config.py": "import os\nKEY = os.environ['ANTHROPIC_API_KEY']\n"},
                        "delete": ["notes.txt"],
                        "print_after": [f"fixed {DOTENV_PLAIN}"],
                    }
                ],
                "review": [{"verdict": "pass", "print": chatter("reviewing")}],
            },
            "1B": {
                "implement": [{"print": chatter("trying"), "print_after": [f"cannot go on: {DOTENV_KEY}"], "exit": 1}]
            },
        }
    )
    return events


def git_objects(root: Path) -> bytes:
    """Every object in the repository, reachable or not, decompressed."""
    return subprocess.run(
        ("git", "cat-file", "--batch-all-objects", "--batch"), cwd=root, capture_output=True, check=True
    ).stdout


def files_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".env"}


def assert_no_secret(where: str, data: str | bytes) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for secret in SECRETS:
        assert secret not in text, f"{secret} in {where}"


def test_no_secret_in_any_file_object_view_or_notification(project: Project) -> None:
    events = leaky_project(project)
    out = project.run(env=ENV)
    assert out.returncode == 1, out.stdout + out.stderr
    assert_no_secret("the run's output", out.stdout + out.stderr)
    assert project.statuses() == {"1A": "done", "1B": "failed"}

    status = project.run("status", env=ENV)
    status_json = project.run("status", "--json", env=ENV)
    plan = project.run("plan", env=ENV)
    logs = [project.run("logs", mid, *raw, env=ENV) for mid in ("1A", "1B") for raw in ((), ("--raw",))]
    for name, shown in [
        ("status", status),
        ("status --json", status_json),
        ("plan", plan),
        *[("logs", x) for x in logs],
    ]:
        assert_no_secret(name, shown.stdout + shown.stderr)
    milestones = {m["id"]: m for m in json.loads(status_json.stdout)["milestones"]}
    assert milestones["1B"]["reason"] == f"cannot go on: {DOTENV_MARKER}"  # masked, not dropped
    assert DOTENV_MARKER in milestones["1A"]["last_line"]
    assert f"starting {SECRET_MARKER}" in logs[1].stdout  # the transcript keeps its shape

    assert_no_secret("/api/milestones", _served(project))
    sent = events.read_text()
    assert "milestone_failed" in sent and "run_finished" in sent
    assert_no_secret("the notifications", sent)

    written = files_under(project.root)
    assert project.root / "logs" / "metrics.json" in written and project.root / "TASKS.md" in written
    assert any(p.parent.name == ".orchestrator" for p in written)
    for path, data in written.items():
        assert_no_secret(str(path), data)
    assert_no_secret("a git object", git_objects(project.root))
    assert project.git("stash", "list") == ""

    remediation = next(c for c in project.agent_calls() if c["role"] == "remediate")
    assert "config.py:2" in remediation["prompt"] and "notes.txt:1" in remediation["prompt"]
    assert "Remove them" in remediation["prompt"]
    assert project.git("show", "milestone/1A:config.py") == "import os\nKEY = os.environ['ANTHROPIC_API_KEY']\n"
    # The change held back in round 1 is committed once clean, as the milestone's one commit.
    assert project.git("log", "--format=%s", "main..milestone/1A").splitlines() == ["Milestone 1A: Alpha"]


def _served(project: Project) -> str:
    log = project.root.parent / "serve.txt"
    server = start(project.root, "serve", "--port", "0", env=ENV, log=log)
    try:
        line = wait_for(lambda: "127.0.0.1:" in log.read_text() and log.read_text(), "the server's address")
        port = line.split("127.0.0.1:", 1)[1].split("/", 1)[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/milestones", timeout=10) as response:
            return str(response.read().decode())
    finally:
        server.kill()
        server.wait(timeout=10)


def test_a_secret_the_agent_will_not_remove_fails_the_milestone_and_is_never_an_object(project: Project) -> None:
    leaky_project(project, review={"max_rounds": 1})
    out = project.run("--milestone", "1A", env=ENV)
    assert out.returncode == 1, out.stdout + out.stderr
    reason = next(m for m in project.status_json()["milestones"] if m["id"] == "1A")["reason"]
    assert "config.py:2: a value from .env (ANTHROPIC_API_KEY)" in reason, reason
    assert f"KEY = '{DOTENV_MARKER}'" in reason and "notes.txt:1: a GitHub token" in reason
    assert "nothing was committed" in reason
    assert "remediate" not in [c["role"] for c in project.agent_calls()]
    assert_no_secret("a git object", git_objects(project.root))
    assert project.git("rev-parse", "milestone/1A") == project.git("rev-parse", "main")  # no commit made
    worktree = project.root / ".worktree" / "1A"
    assert DOTENV_KEY in (worktree / "config.py").read_text()  # the agent's file is kept to look at, uncommitted
    for path, data in files_under(project.root).items():
        if worktree not in path.parents:
            assert_no_secret(str(path), data)


def test_state_and_logs_are_readable_by_the_user_only_and_tasks_follows_the_umask(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    out = subprocess.run(
        (sys.executable, str(ORCHESTRATOR)),
        cwd=project.root,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o027,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for folder in (project.root / ".orchestrator", project.root / "logs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        inside = [p for p in folder.rglob("*")]
        assert inside, folder
        for path in inside:
            assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert stat.S_IMODE((project.root / "TASKS.md").stat().st_mode) == 0o640


def test_a_dotenv_line_that_does_not_load_is_reported_without_its_secret(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    (project.root / ".env").write_text(f"MY_SETTING={DOTENV_PLAIN}\noops {DOTENV_KEY} here\n")
    out = project.run("--validate-only", env=ENV)
    assert out.returncode == 2 and ".env:2" in out.stderr, out.stderr
    assert "python-dotenv" not in out.stderr  # one message about the line, not the parser's too
    assert_no_secret("--validate-only's output", out.stdout + out.stderr)

"""Escape sequences from milestone titles and agent output never reach a terminal, TASKS.md or JSON;
`serve` answers only requests addressed to a loopback name (DNS rebinding)."""

from __future__ import annotations

import http.client
import json
import os
import pty
import select
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from conftest import ORCHESTRATOR, Project

from orchestrator_lib import render, server
from orchestrator_lib.plan import Plan
from orchestrator_lib.state import RunState

HOSTILE_TITLE = "Evil\x1b]0;pwned title\x07 \x1b[31mred\x1b[0m\x9b2J title\x00\x85"
HOSTILE_OUTPUT = [
    "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[Hcleared\x07",
    "c1 \x9b31m\x90dcs\x9c",
]
CONTROLS = ("\x1b", "\x07", "\x00", "\x9b", "\x85", "\x90", "\x9c")


def assert_clean(where: str, text: str) -> None:
    for control in CONTROLS:
        assert control not in text, f"{control!r} in {where}: {text[:400]!r}"
        assert json.dumps(control)[1:-1] not in text, f"{control!r} escaped in {where}"  # as JSON writes it


@pytest.fixture
def hostile(project: Project) -> Project:
    project.milestone("1A", HOSTILE_TITLE)
    project.milestone("1B", "Fails")
    project.commit_plan()
    project.configure(review={"enabled": False, "max_rounds": 1})
    project.script(
        {
            "1A": {"implement": [{"print": HOSTILE_OUTPUT, "write": {"a.txt": "a\n"}}]},
            "1B": {"implement": [{"print": HOSTILE_OUTPUT, "exit": 1}]},
        }
    )
    return project


def test_titles_and_agent_output_lose_their_escape_codes_everywhere(hostile: Project) -> None:
    out = hostile.run()
    assert out.returncode == 1, out.stdout + out.stderr
    assert_clean("the run's output", out.stdout + out.stderr)
    for args in (
        ("status",),
        ("status", "--json"),
        ("plan",),
        ("logs", "1A"),
        ("logs", "1B", "--raw"),
        ("watch", "--once"),
    ):
        shown = hostile.run(*args)
        assert_clean(" ".join(args), shown.stdout + shown.stderr)
    tasks = (hostile.root / "TASKS.md").read_text()
    assert_clean("TASKS.md", tasks)
    assert "| Evil red title" in tasks  # CSI and OSC with their parameters are gone, the words stay
    status = hostile.status_json()
    one = {m["id"]: m for m in status["milestones"]}
    assert one["1A"]["title"].startswith("Evil") and "red" in one["1A"]["title"]
    assert one["1B"]["reason"].strip() == "c1"  # the last line, without its CSI and its DCS string


def test_without_a_terminal_the_runners_own_output_has_no_escape_codes(hostile: Project) -> None:
    # NO_COLOR unset and not a terminal: plain text all the same.
    out = hostile.run(env={"NO_COLOR": ""})
    assert "\x1b" not in out.stdout + out.stderr
    for args in (("status",), ("watch", "--once"), ("plan",)):
        shown = hostile.run(*args, env={"NO_COLOR": ""})
        assert shown.returncode in (0, 2) and "\x1b" not in shown.stdout + shown.stderr, args


def on_a_terminal(project: Project, *args: str) -> str:
    """What `orchestrator.py args` prints on a real (pseudo) terminal, NO_COLOR unset."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm-256color", "COLUMNS": "160"}
    shown = subprocess.Popen(
        (sys.executable, str(ORCHESTRATOR), *args), cwd=project.root, stdin=subprocess.DEVNULL, stdout=terminal,
        stderr=terminal, env=env,
    )  # fmt: skip
    os.close(terminal)
    screen = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            assert ready, f"no output from {args}; got {screen!r}"
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the command has ended
                break
            if not chunk:
                break
            screen += chunk
        assert shown.wait(timeout=30) == 0
    finally:
        shown.kill()
        os.close(controller)
    return screen.decode("utf-8", "replace")


def test_on_a_colour_terminal_only_the_runners_own_colours_remain(hostile: Project) -> None:
    assert hostile.run().returncode == 1
    screen = on_a_terminal(hostile, "status")
    assert "\x1b[" in screen  # a terminal gets colour
    assert "Evil" in screen and "pwned" not in screen and "\x1b]" not in screen and "\x07" not in screen
    assert "\x9b" not in screen and "\x1b[2J" not in screen and "\x1b[31mred" not in screen
    logs = on_a_terminal(hostile, "logs", "1B")
    assert "cleared" in logs and "\x1b" not in logs and "\x07" not in logs


# ------------------------------------------------------------------ Host header


@pytest.fixture
def served() -> Iterator[int]:
    snap = render.snapshot(Plan(()), {}, RunState())
    httpd = server.make_server(lambda: snap, 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def ask(
    port: int, host: str | None, method: str = "GET", path: str = "/api/milestones"
) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}",
             "[::1]", "127.8.9.10:{port}"],
)  # fmt: skip
def test_loopback_names_are_answered(served: int, host: str) -> None:
    code, body = ask(served, host.format(port=served))
    assert code == 200 and "milestones" in body


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "localhost.evil.example", "127.0.0.1.evil.example", "10.0.0.1",
             "0.0.0.0:{port}", "", None, "localhost:abc", "[::1]x", "[::2]:{port}", "127.0.0.1:{port}@evil.example"],
)  # fmt: skip
def test_any_other_host_is_forbidden(served: int, host: str | None) -> None:
    code, body = ask(served, None if host is None else host.format(port=served))
    assert code == 403 and "Host" in str(body["error"])
    code, _ = ask(served, None if host is None else host.format(port=served), method="POST")
    assert code == 403  # refused before anything else is said


def test_health_is_behind_the_same_check(served: int) -> None:
    assert ask(served, "evil.example", path="/health")[0] == 403
    assert ask(served, f"localhost:{served}", path="/health") == (200, {"ok": True})

"""The docs agree with the code: README, `--help`, the orchestrator.sh verbs, usage and menu,
setup.bat, the config keys, the `status --json` keys, metrics.json, notifications, serve."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pty
import re
import select
import subprocess
import sys
import typing
from pathlib import Path

from conftest import ORCHESTRATOR, REPO, Project

from orchestrator_lib import notify, server
from orchestrator_lib.config import Config
from orchestrator_lib.metrics import MetricsSampler

README = (REPO / "README.md").read_text()
SH = (REPO / "orchestrator.sh").read_text()
BAT = (REPO / "setup.bat").read_text()
DEV_ONLY = {"test"}  # ./orchestrator.sh test: for developers, documented under Development
NOT_COMMANDS = {"single", "setup", "help"}  # verbs of the wrappers only: run once, make the venv, usage


def section(title: str) -> str:
    """A README section, from its heading to the next heading of the same level."""
    level = re.match(r"#+", title)
    assert level, title
    start = README.index(f"\n{title}\n")
    end = README.find(f"\n{level.group()} ", start + len(title) + 2)
    return README[start : end if end != -1 else len(README)]


def table_keys(text: str) -> list[str]:
    """The backticked first cells of the first Markdown table in `text`."""
    table = re.search(r"(?m)(^\|.*\n)+", text)
    assert table, "no table"
    return re.findall(r"(?m)^\| `([^`]+)` \|", table.group())


def sh_verbs() -> list[str]:
    found = re.search(r'(?m)^VERBS="([^"]+)"', SH)
    assert found
    return found.group(1).split()


def sh_usage_verbs() -> list[str]:
    usage = SH[SH.index("usage() {") : SH.index("\nTXT\n")]
    return re.findall(r"(?m)^  ([a-z]+) {2,}", usage)


def sh_dispatched() -> set[str]:
    body = SH[SH.index("dispatch() {") :]
    body = body[: body.index("\n}\n")]
    patterns = re.findall(r"(?m)^    ([a-z| -]+)\)", body)
    return {v.strip() for p in patterns for v in p.split("|") if not v.strip().startswith("-")}


def bat_verbs() -> dict[str, list[str]]:
    rem = re.search(r"(?m)^rem Verbs: (.+)$", BAT)
    menu = re.search(r"(?m)^echo .*verbs are (.+)$", BAT)
    usages = re.findall(r"(?m)^echo usage: setup\.bat \[([^\]]+)\]", BAT)
    loop = re.search(r"(?m)^for %%V in \(([^)]+)\) do", BAT)
    assert rem and menu and usages and loop
    handled = set(re.findall(r'if /i "%VERB%"=="([a-z]+)"', BAT)) | set(loop.group(1).split())
    return {
        "rem": rem.group(1).split(),
        "menu": menu.group(1).split(),
        **{f"usage{i}": u.split("^|") for i, u in enumerate(usages)},
        "handled": sorted(handled),
    }


def cli_commands() -> list[str]:
    out = subprocess.run((sys.executable, str(ORCHESTRATOR), "--help"), capture_output=True, text=True, check=True)
    listing = out.stdout.split("\npositional arguments:", 1)[1].split("\noptions:", 1)[0]
    return re.findall(r"(?m)^    ([a-z]+) ", listing)  # wrapped help lines are indented further


def test_the_shell_wrapper_agrees_with_itself_and_the_readme() -> None:
    verbs = sh_verbs()
    assert sh_usage_verbs() == verbs
    assert sh_dispatched() - DEV_ONLY == set(verbs)
    assert table_keys(section("## Commands")) == verbs  # same verbs, same order


def test_setup_bat_mirrors_the_shell_wrapper() -> None:
    verbs = sh_verbs()
    for where, listed in bat_verbs().items():
        if where == "handled":
            assert set(listed) == set(verbs), listed
        else:
            assert listed == verbs, where


def test_every_cli_command_has_a_verb_and_every_verb_a_command() -> None:
    commands = cli_commands()
    assert commands, "no subcommands found in --help"
    assert set(commands) == set(sh_verbs()) - NOT_COMMANDS
    for command in commands:
        assert f"python orchestrator.py {command}" in section("## Commands") or command == "validate"
    assert "python orchestrator.py --validate-only" in section("## Commands")


def test_the_interactive_menu_lists_every_verb(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    env = {**os.environ, "ORCHESTRATOR_VENV": str(tmp_path / "venv"), "TERM": "dumb"}
    menu = subprocess.Popen(
        ("bash", str(REPO / "orchestrator.sh")), stdin=terminal, stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    screen = b""
    try:
        while b"number> " not in screen:
            ready, _, _ = select.select([controller], [], [], 15)
            assert ready, f"no menu prompt; got {screen!r}"
            screen += os.read(controller, 4096)
        shown = {int(n): verb for n, verb in re.findall(r"(\d+)\) ([a-z]+)", screen.decode())}
        assert [shown[n] for n in sorted(shown)] == [*sh_verbs(), "quit"]  # `select` lays them out in columns
        quit_number = next(n for n, verb in shown.items() if verb == "quit")
        os.write(controller, f"{quit_number}\n".encode())
        assert menu.wait(timeout=15) == 0
    finally:
        menu.kill()
        os.close(controller)
    assert not (tmp_path / "venv").exists()  # quitting sets nothing up


def test_the_wrapper_prints_usage_and_refuses_unknown_verbs(tmp_path: Path) -> None:
    env = {**os.environ, "ORCHESTRATOR_VENV": str(tmp_path / "venv")}
    helped = subprocess.run(("bash", str(REPO / "orchestrator.sh"), "help"), capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and all(f"  {verb} " in helped.stdout for verb in sh_verbs())
    bad = subprocess.run(("bash", str(REPO / "orchestrator.sh"), "nope"), capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown verb 'nope'" in bad.stderr


def config_keys(cls: type = Config, prefix: str = "") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):  # a section: its keys are documented one by one
            keys |= config_keys(typing.cast(type, hint), f"{prefix}{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def test_the_readme_config_table_lists_every_key_and_no_other() -> None:
    documented = table_keys(section("## Configuration"))
    assert len(documented) == len(set(documented)), "a key is listed twice"
    assert set(documented) == config_keys()


def documented_names(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", text))


def json_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


def test_status_json_keys_are_the_documented_ones(project: Project) -> None:
    project.milestone("1A")
    project.commit_plan()
    assert project.run().returncode == 0
    keys = json_keys(project.status_json())
    paragraph = section("## Status, TASKS.md and logs")
    paragraph = paragraph[paragraph.index("`status --json` prints") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    assert keys == documented_names(paragraph)


def test_metrics_json_keys_are_the_documented_ones(tmp_path: Path) -> None:
    class Monitor:
        def sample(self) -> typing.Any:
            return type("Reading", (), {"cpu_percent": 1.0, "memory_percent": 2.0, "disk_free_gb": 3.0})()

        def agent_rss(self, pids: dict[str, int]) -> dict[str, int]:
            return dict.fromkeys(pids, 1)

        def own_rss(self) -> int:
            return 1

    from orchestrator_lib.state import MilestoneState

    records = {"1A": MilestoneState("1A", 1, "A", status="running", agent_pid=5, started_at=1.0)}
    document = MetricsSampler(tmp_path / "m.json", 10, Monitor(), lambda: records).record()
    keys = json_keys(document) - {"1A"}  # milestone ids are data, not keys
    assert keys == documented_names(section("### Metrics: logs/metrics.json"))
    json.loads((tmp_path / "m.json").read_text())


def test_notification_events_and_serve_paths_are_documented() -> None:
    text = section("### Notifications")
    assert set(notify.EVENTS) <= documented_names(text)
    assert "notify.command" in text and "notify.desktop" in text
    serve = section("### HTTP status for other tools: serve")
    for path in server.PATHS:
        assert f"`GET {path}`" in serve


def test_the_code_map_lists_every_module_top_to_bottom() -> None:
    """README's "How the code is laid out": one line per module, each importing only modules below it."""
    listed = re.findall(r"(?m)^(\S+\.py) {2,}\S", section("## How the code is laid out"))
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.py"], capture_output=True, text=True, check=True)
    modules = [f for f in out.stdout.split() if not f.startswith(("tests/", "bench/"))]
    assert sorted(listed) == sorted(set(listed)), "a module is listed twice"
    assert set(modules) - set(listed) == set(), "add a line for each to README's 'How the code is laid out'"
    assert set(listed) - set(modules) == set(), "README's 'How the code is laid out' lists modules that are gone"
    below = {name: set(listed[i + 1 :]) for i, name in enumerate(listed)}
    upward = [f"{f} imports {t}" for f in listed for t in _project_imports(f, listed) if t not in below[f]]
    assert upward == [], "move the importer above what it imports in README's map (or the import down a layer)"


def _project_imports(path: str, files: list[str]) -> set[str]:
    by_module = {f[:-3].replace("/", ".").removesuffix(".__init__"): f for f in files}
    module = path[:-3].replace("/", ".").removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {by_module[n] for n in names if n in by_module and n != module}
    return found


def test_the_promises_cite_tests_that_exist() -> None:
    """'What the runner will never do' names the tests that prove each promise: each must exist."""
    text = section("## What the runner will never do")
    promises = ("Delete outside its folders", "Commit a secret", "Overwrite your TASKS.md", "Touch your uncommitted")
    for promise in promises:
        assert f"**{promise}" in text, promise
    files = set(re.findall(r"tests/\w+\.py", text))
    sources = [(REPO / f).read_text() for f in files]  # a cited file that is missing fails here
    cited = re.findall(r"`(test_\w+)`", text)
    assert len(cited) >= 10
    missing = [name for name in cited if not any(re.search(rf"^def {name}\(", s, re.MULTILINE) for s in sources)]
    assert not missing, f"README cites tests that do not exist: {missing}"

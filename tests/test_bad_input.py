"""Adversarial inputs, as a hostile new user would try them: each is exit 2 at `--validate-only` and
at `run`, with a message naming the file, key or line, and nothing written (the checkout, git's
refs, worktree records and exclude list hash the same before and after). Issue 9, §1 and §4–§6.

In-process `main([...])` keeps the table fast; the real-run regressions live in test_safe_delete.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from bad_input import fingerprint, unwritable
from conftest import Project

from orchestrator import main
from orchestrator_lib import config as configuration

Setup = Callable[[Path], None]


class Case(NamedTuple):
    name: str
    expect: tuple[str, ...]  # each must appear in stderr
    config: dict[str, Any] | None = None  # merged into the project's working config
    setup: Setup | None = None
    argv: tuple[str, ...] = ()  # extra run arguments (also given to --validate-only)
    env: dict[str, str] | None = None
    validate: bool = True  # --validate-only must refuse it too


def _run(project: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    if case.config is not None:
        project.configure(**_merged(project.config, case.config))
    if case.setup is not None:
        case.setup(project.root)
    before = fingerprint(project.root)
    verbs = [["--validate-only", *case.argv]] if case.validate else []
    for argv in [*verbs, ["run", *case.argv]]:
        code = main(["--project", str(project.root), *argv])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        missing = [text for text in case.expect if text not in err]
        assert not missing, (argv, missing, err)
        assert "Traceback" not in err
    assert fingerprint(project.root) == before, "a refused command wrote something"


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Overrides for Project.configure: sections merged with the test's, the agent's keys added to the fake's."""
    out = {k: v for k, v in base.items() if k != "agent"}
    for key, value in extra.items():
        if key != "agent" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@pytest.fixture
def planned(project: Project) -> Project:
    project.milestone("1A")
    project.milestone("1B")
    project.milestone("2A", deps=["1A"])
    project.commit_plan()
    return project


CFG = "orchestrator.config.json"

# ---------------------------------------------------------------- §1 path keys

PATH_CASES = [
    Case("worktree_dir dot", ("worktree_dir", "repository root", CFG), {"worktree_dir": "."}),
    Case("worktree_dir empty", ("worktree_dir", "empty"), {"worktree_dir": ""}),
    Case("worktree_dir blank", ("worktree_dir", "empty"), {"worktree_dir": "   "}),
    Case("worktree_dir dot slash", ("worktree_dir", "repository root"), {"worktree_dir": "./"}),
    Case("worktree_dir folds to root", ("worktree_dir", "repository root"), {"worktree_dir": "a/.."}),
    Case("worktree_dir parent", ("worktree_dir", ".."), {"worktree_dir": ".."}),
    Case("worktree_dir sibling", ("worktree_dir", ".."), {"worktree_dir": "../elsewhere"}),
    Case("worktree_dir sneaks out", ("worktree_dir", ".."), {"worktree_dir": "a/../../b"}),
    Case("worktree_dir absolute", ("worktree_dir", "relative"), {"worktree_dir": "/tmp/wt"}),
    Case("worktree_dir home", ("worktree_dir", "relative"), {"worktree_dir": "~/wt"}),
    Case("worktree_dir windows drive", ("worktree_dir", "relative"), {"worktree_dir": "C:/wt"}),
    Case("worktree_dir .git", ("worktree_dir", ".git"), {"worktree_dir": ".git"}),
    Case("worktree_dir inside .git", ("worktree_dir", ".git"), {"worktree_dir": ".git/wt"}),
    Case("worktree_dir .git by folding", ("worktree_dir", ".git"), {"worktree_dir": "x/../.git"}),
    Case("worktree_dir .GIT", ("worktree_dir", ".git"), {"worktree_dir": ".GIT"}),
    Case("worktree_dir backslashes to .git", ("worktree_dir", ".git"), {"worktree_dir": ".git\\wt"}),
    Case("worktree_dir newline", ("worktree_dir", "control"), {"worktree_dir": "wt\n*"}),
    Case("worktree_dir glob", ("worktree_dir", "*"), {"worktree_dir": "*"}),
    Case("worktree_dir is the state folder", ("worktree_dir", ".orchestrator"), {"worktree_dir": ".orchestrator"}),
    Case("worktree_dir in the state folder", ("worktree_dir", ".orchestrator"), {"worktree_dir": ".orchestrator/w"}),
    Case(
        "milestones_dir inside worktree_dir",
        ("worktree_dir", "milestones_dir", "lies inside"),
        {"worktree_dir": "work", "milestones_dir": "work/plan"},
    ),
    Case(
        "worktree_dir inside milestones_dir",
        ("worktree_dir", "milestones_dir"),
        {"worktree_dir": "milestones/wt"},
    ),
    Case("log_dir is worktree_dir", ("logging.log_dir", "worktree_dir"), {"logging": {"log_dir": ".worktree"}}),
    Case("log_dir is milestones", ("logging.log_dir", "milestones_dir"), {"logging": {"log_dir": "milestones"}}),
    Case("log_dir dot", ("logging.log_dir", "repository root"), {"logging": {"log_dir": "."}}),
    Case("log_dir absolute", ("logging.log_dir", "relative"), {"logging": {"log_dir": "/var/log/x"}}),
    Case("log_dir .git", ("logging.log_dir", ".git"), {"logging": {"log_dir": ".git/logs"}}),
    Case("milestones_dir parent", ("milestones_dir", ".."), {"milestones_dir": ".."}),
    Case("milestones_dir root", ("milestones_dir", "repository root"), {"milestones_dir": "."}),
    Case("tasks_file empty", ("tasks_file", "empty"), {"tasks_file": ""}),
    Case("tasks_file dot", ("tasks_file", "repository root"), {"tasks_file": "."}),
    Case("tasks_file in .git", ("tasks_file", ".git"), {"tasks_file": ".git/TASKS.md"}),
    Case("tasks_file outside", ("tasks_file", ".."), {"tasks_file": "../TASKS.md"}),
    Case("tasks_file absolute", ("tasks_file", "relative"), {"tasks_file": "/tmp/TASKS.md"}),
    Case("tasks_file in worktree_dir", ("tasks_file", "worktree_dir"), {"tasks_file": ".worktree/TASKS.md"}),
    Case("tasks_file in log_dir", ("tasks_file", "logging.log_dir"), {"tasks_file": "logs/TASKS.md"}),
    Case("tasks_file in milestones", ("tasks_file", "milestones_dir"), {"tasks_file": "milestones/TASKS.md"}),
    Case(
        "worktree_dir through a link to the parent",
        ("worktree_dir", "symbolic link"),
        {"worktree_dir": "up"},
        lambda root: (root / "up").symlink_to(root.parent),
    ),
    Case(
        "worktree_dir through a link to .git",
        ("worktree_dir", ".git"),
        {"worktree_dir": "g"},
        lambda root: (root / "g").symlink_to(root / ".git"),
    ),
    Case(
        "log_dir through a link to the root",
        ("logging.log_dir", "symbolic link"),
        {"logging": {"log_dir": "here"}},
        lambda root: (root / "here").symlink_to(root),
    ),
]


@pytest.mark.parametrize("case", PATH_CASES, ids=lambda c: c.name)
def test_path_keys(planned: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    _run(planned, case, capsys)


def test_every_path_key_gets_the_rules() -> None:
    keys = {key for key, _ in configuration.pathkeys.path_keys(configuration.Config())}
    assert keys == {"worktree_dir", "milestones_dir", "tasks_file", "logging.log_dir"}


# ---------------------------------------------------------------- §4 numbers: finite, floors, ceilings

NUMERIC_KEYS = [*configuration.RANGES, "agent.timeout_minutes", "agent.idle_timeout_minutes"]


def _nested(key: str, value: Any) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _hint(key: str) -> Any:
    kind: Any = configuration.Config
    for part in key.split("."):
        kind = typing.get_type_hints(kind)[part]
        kind = next((a for a in typing.get_args(kind) if dataclasses.is_dataclass(a)), kind)
    return kind


INT_KEYS = {key for key in NUMERIC_KEYS if _hint(key) is int}
NONFINITE_CASES = [
    Case(f"{key} {value}", (key, "whole number" if key in INT_KEYS else "finite", CFG), _nested(key, value))
    for key in NUMERIC_KEYS
    for value in (math.nan, math.inf, -math.inf)
]
RANGE_CASES = [
    Case(
        "interval_seconds tiny", ("monitor.interval_seconds", "at least 0.1"), {"monitor": {"interval_seconds": 0.01}}
    ),
    Case("interval_seconds zero", ("monitor.interval_seconds",), {"monitor": {"interval_seconds": 0}}),
    Case("interval_seconds huge", ("monitor.interval_seconds", "at most"), {"monitor": {"interval_seconds": 1e300}}),
    Case("max_parallel_tasks zero", ("max_parallel_tasks", "at least 1"), {"max_parallel_tasks": 0}),
    Case("max_parallel_tasks negative", ("max_parallel_tasks",), {"max_parallel_tasks": -3}),
    Case("max_parallel_tasks huge", ("max_parallel_tasks", "at most"), {"max_parallel_tasks": 10**30}),
    Case("max_parallel_tasks fraction", ("max_parallel_tasks", "whole number"), {"max_parallel_tasks": 2.5}),
    Case("max_parallel_tasks bool", ("max_parallel_tasks", "whole number"), {"max_parallel_tasks": True}),
    Case("retry_attempts negative", ("retry_attempts",), {"retry_attempts": -1}),
    Case("agent timeout zero", ("agent.timeout_minutes",), {"agent": {"timeout_minutes": 0}}),
    Case("agent idle negative", ("agent.idle_timeout_minutes",), {"agent": {"idle_timeout_minutes": -5}}),
    Case("validation timeout zero", ("validation.timeout_minutes",), {"validation": {"timeout_minutes": 0}}),
    Case("validation timeout huge", ("validation.timeout_minutes",), {"validation": {"timeout_minutes": 1e200}}),
    Case("claude wait zero", ("claude_rate_limit_wait",), {"claude_rate_limit_wait": 0}),
    Case(
        "backoff max below initial", ("rate_limit.backoff_max_seconds",), {"rate_limit": {"backoff_max_seconds": 0.01}}
    ),
    Case("review rounds zero", ("review.max_rounds",), {"review": {"max_rounds": 0}}),
    Case("cpu percent over 100", ("monitor.max_cpu_percent",), {"monitor": {"max_cpu_percent": 101}}),
    Case("memory percent zero", ("monitor.max_memory_percent",), {"monitor": {"max_memory_percent": 0}}),
    Case("disk negative", ("monitor.min_free_disk_gb",), {"monitor": {"min_free_disk_gb": -1}}),
    Case("max_file_kb negative", ("validation.max_file_kb",), {"validation": {"max_file_kb": -1}}),
    Case("recovery negative", ("recovery.max_attempts",), {"recovery": {"max_attempts": -1}}),
    Case("review agent timeout", ("review.agent.timeout_minutes",), {"review": {"agent": {"timeout_minutes": 0}}}),
]


@pytest.mark.parametrize("case", NONFINITE_CASES + RANGE_CASES, ids=lambda c: c.name)
def test_numbers(planned: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    _run(planned, case, capsys)


# ---------------------------------------------------------------- §4/§6 the config file itself


def _config_text(text: str | bytes) -> Setup:
    def write(root: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        (root / CFG).write_bytes(data)

    return write


def _config_dir(root: Path) -> None:
    (root / CFG).unlink()
    (root / CFG).mkdir()


FILE_CASES = [
    Case("config not UTF-8", (CFG, "UTF-8"), setup=_config_text(b'{"worktree_dir": "\xff\xfe"}')),
    Case("config latin-1", (CFG, "UTF-8"), setup=_config_text('{"tasks_file": "T\u00c4SKS.md"}'.encode("latin-1"))),
    Case("config is a list", (CFG, "JSON object"), setup=_config_text("[1, 2]")),
    Case("config is a string", (CFG, "JSON object"), setup=_config_text('"hello"')),
    Case("config is a folder", (CFG,), setup=_config_dir),
    Case("config bad JSON", (f"{CFG}:2",), setup=_config_text('{\n  "a": ,\n}')),
    Case(
        "config duplicate key",
        (CFG, "worktree_dir", "twice"),
        setup=_config_text('{"worktree_dir": "a", "worktree_dir": "."}'),
    ),
    Case("config nested too deep", (CFG,), setup=_config_text("[" * 100000 + "]" * 100000)),
    Case("config huge number", (CFG,), setup=_config_text('{"max_parallel_tasks": ' + "9" * 5000 + "}")),
    Case("section not an object", (CFG, "monitor", "object"), {"monitor": 5}),
    Case("logging not an object", (CFG, "logging", "object"), {"logging": ["x"]}),
    Case("agent env not strings", (CFG, "agent.env"), {"agent": {"env": {"A": 1}}}),
    Case("extra_args not a list", (CFG, "agent.extra_args"), {"agent": {"extra_args": "--x"}}),
    Case("path key not a string", (CFG, "worktree_dir", "a string"), {"worktree_dir": 5}),
    Case("tasks_file null", (CFG, "tasks_file", "a string"), {"tasks_file": None}),
    Case("base_branch number", (CFG, "base_branch", "a string"), {"base_branch": 3}),
    Case("NUL in a string", (CFG, "agent.model", "NUL"), {"agent": {"model": "x\u0000y"}}),
    Case("NUL in an argument", (CFG, "agent.extra_args", "NUL"), {"agent": {"extra_args": ["a\u0000"]}}),
    Case("lone surrogate in a path", (CFG, "worktree_dir", "surrogate"), {"worktree_dir": "w\udc00"}),
    Case("lone surrogate in a key", (CFG, "unknown config key"), setup=_config_text('{"\\ud800x": 1}')),
    Case("= in an env name", (CFG, "agent.env"), {"agent": {"env": {"A=B": "1"}}}),
    Case("LOG_LEVEL bad", ("LOG_LEVEL",), env={"LOG_LEVEL": "loud"}),
    Case("AUTO_RESUME bad", ("AUTO_RESUME",), env={"AUTO_RESUME": "maybe"}),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_config_files(
    planned: Project, case: Case, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (case.env or {}).items():
        monkeypatch.setenv(name, value)
    _run(planned, case, capsys)


def test_bad_log_level_names_the_variable_not_the_file(
    planned: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert main(["--project", str(planned.root), "--validate-only"]) == 2
    line = next(line for line in capsys.readouterr().err.splitlines() if "chatty" in line)
    assert "LOG_LEVEL" in line and CFG not in line


def test_every_config_problem_is_reported_in_one_run(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {
        "max_paralel_tasks": 2,
        "worktre_dir": "x",
        "interval_seconds": 3,
        "monitor": {"interval_seconds": 0.01, "max_cpu_percent": "high", "bogus": 1},
        "validation": {"timeout_minutes": math.inf},
        "worktree_dir": ".",
        "agent": {"timeout_minutes": -1},
    }
    planned.configure(**_merged(planned.config, bad))
    (planned.root / "milestones" / "3A.md").write_text("no title\n")
    before = fingerprint(planned.root)
    for argv in (["--validate-only"], ["run"]):
        assert main(["--project", str(planned.root), *argv]) == 2
        err = capsys.readouterr().err
        for text in (
            "`max_paralel_tasks` (did you mean `max_parallel_tasks`?)",
            "`worktre_dir` (did you mean `worktree_dir`?)",
            "`interval_seconds` (did you mean `monitor.interval_seconds`?)",
            "`monitor.bogus`",
            "`monitor.interval_seconds` must be at least 0.1",
            "`monitor.max_cpu_percent` must be a number",
            "`validation.timeout_minutes` must be a finite number",
            "`worktree_dir` must not be the repository root",
            "`agent.timeout_minutes`",
            "milestones/3A.md",
        ):
            assert text in err, (argv, text, err)
        assert "11 problem(s) found" in err  # 9 in the config, 2 in 3A.md
    assert fingerprint(planned.root) == before


def test_a_config_with_a_byte_order_mark_is_read(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    text = (planned.root / CFG).read_text()
    (planned.root / CFG).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert main(["--project", str(planned.root), "--validate-only"]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- §6 .env


def _env(data: bytes) -> Setup:
    return lambda root: (root / ".env").write_bytes(data)


ENV_CASES = [
    Case(".env folder", (".env", "directory"), setup=lambda root: (root / ".env").mkdir()),
    Case(".env not UTF-8", (".env:2", "UTF-8"), setup=_env(b"A=1\nB=caf\xe9\n")),
    Case(".env malformed", (".env:2", "cannot read this line"), setup=_env(b"A=1\nthis line is not\nC=3\n")),
    Case(".env unclosed quote", (".env:1", "TOKEN"), setup=_env(b"TOKEN='abc\n")),
    Case(".env space in name", (".env:3",), setup=_env(b"# comment\nA=1\nMY KEY=x\n")),
    Case(".env NUL in a value", (".env", "NUL"), setup=_env(b"A='x\x00y'\n")),
    Case(".env dangling link", (".env",), setup=lambda root: (root / ".env").symlink_to(root / "gone")),
]


@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: c.name)
def test_dotenv(planned: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    _run(planned, case, capsys)


@pytest.mark.parametrize("line", [b"hunter2 correct horse battery\n", b"API_TOKEN='hunter2-correct-horse-battery\n"])
def test_a_bad_env_line_is_named_without_its_value(
    planned: Project, line: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    # A pasted secret is a typical bad line: the message names the line, never its text.
    (planned.root / ".env").write_bytes(b"A=1\n" + line)
    for argv in (["--validate-only"], ["run"]):
        assert main(["--project", str(planned.root), *argv]) == 2
        out = capsys.readouterr()
        assert ".env:2: cannot read this line" in out.err
        assert "hunter2" not in out.out + out.err


def test_a_good_dotenv_passes(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    (planned.root / ".env").write_text("# keys\nexport A=1\nB='two words'\n\nC=\"x#y\" # note\n")
    assert main(["--project", str(planned.root), "--validate-only"]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- §4 where the runner writes


def _dir(rel: str) -> Setup:
    return lambda root: (root / rel).mkdir(parents=True)


def _file(rel: str) -> Setup:
    def write(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("mine\n")

    return write


def _tracked(rel: str) -> Setup:
    def commit(root: Path) -> None:
        import subprocess

        _file(rel)(root)
        subprocess.run(("git", "add", rel), cwd=root, check=True)
        subprocess.run(("git", "commit", "-qm", f"add {rel}"), cwd=root, check=True)

    return commit


OUTPUT_CASES = [
    Case("TASKS.md is a folder", ("TASKS.md", "tasks_file", "folder"), setup=_dir("TASKS.md")),
    Case(
        "custom tasks_file is a folder", ("PROGRESS.md", "folder"), {"tasks_file": "PROGRESS.md"}, _dir("PROGRESS.md")
    ),
    Case("tasks_file under a file", ("docs", "a file"), {"tasks_file": "docs/TASKS.md"}, _file("docs")),
    Case("logs is a file", ("logs", "logging.log_dir", "a file"), setup=_file("logs")),
    Case(".worktree is a file", (".worktree", "worktree_dir", "a file"), setup=_file(".worktree")),
    Case(".orchestrator is a file", (".orchestrator", "a file"), setup=_file(".orchestrator")),
    Case("log_dir under a file", ("out", "a file"), {"logging": {"log_dir": "out/logs"}}, _file("out")),
    Case("metrics.json is a folder", ("metrics.json", "folder"), setup=_dir("logs/metrics.json")),
    Case("state.db is a folder", ("state.db", "folder"), setup=_dir(".orchestrator/state.db")),
    Case("lock is a folder", ("lock", "folder"), setup=_dir(".orchestrator/lock")),
    Case("control is a file", ("control", "a file"), setup=_file(".orchestrator/control")),
    Case(
        "worktree_dir holds your files",
        ("worktree_dir", "src", "tracked"),
        {"worktree_dir": "src"},
        _tracked("src/app.py"),
    ),
    Case("exclude is a folder", ("exclude", "folder"), setup=lambda root: _swap_exclude(root)),
]


def _swap_exclude(root: Path) -> None:
    exclude = root / ".git" / "info" / "exclude"
    exclude.unlink(missing_ok=True)
    exclude.mkdir(parents=True)


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=lambda c: c.name)
def test_output_paths(planned: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    _run(planned, case, capsys)


@pytest.mark.parametrize("where", [".orchestrator", "logs", ".", ".worktree", ".git"])
def test_unwritable_places(planned: Project, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = planned.root / where
    target.mkdir(exist_ok=True)
    before = fingerprint(planned.root)
    with unwritable(target):
        for argv in (["--validate-only"], ["run"]):
            assert main(["--project", str(planned.root), *argv]) == 2
            err = capsys.readouterr().err
            assert "not writable" in err and (where in err or str(planned.root) in err), err
        assert fingerprint(planned.root) == before


def test_a_read_only_state_database_is_called_read_only(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert planned.run("--milestone", "1A").returncode == 0
    db = planned.root / ".orchestrator" / "state.db"
    before = fingerprint(planned.root)
    with unwritable(db):
        assert main(["--project", str(planned.root), "run"]) == 2
        err = capsys.readouterr().err
        assert "state.db" in err and "read-only" in err and "disk space" not in err
        assert fingerprint(planned.root) == before


def test_the_state_store_says_read_only_when_a_write_is_refused(tmp_path: Path) -> None:
    from orchestrator_lib.state import StateStore, StateWriteError

    store = StateStore.open(tmp_path)
    assert store is not None
    store.close()
    with (
        unwritable(tmp_path / ".orchestrator" / "state.db"),
        pytest.raises(StateWriteError, match="read-only") as caught,
    ):
        store = StateStore.open(tmp_path)
        assert store is not None
        store.update_run(status="running")
    assert "disk space" not in str(caught.value)


# ---------------------------------------------------------------- §4/§5 state records of the wrong shape


def _state(rows: list[tuple[str, str]], run: str | None = None) -> Setup:
    def write(root: Path) -> None:
        from orchestrator_lib.state import StateStore

        store = StateStore.open(root)
        assert store is not None
        store.close()
        with sqlite3.connect(root / ".orchestrator" / "state.db") as conn:
            conn.executemany("INSERT OR REPLACE INTO milestones VALUES (?, ?)", rows)
            if run is not None:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('run', ?)", (run,))
        conn.close()

    return write


def _record(**changes: Any) -> str:
    return json.dumps({"id": "1A", "stage": 1, "title": "t", **changes})


STATE_CASES = [
    Case("record is a list", ("state.db", "corrupt"), setup=_state([("1A", "[1, 2]")])),
    Case("record is a number", ("state.db", "corrupt"), setup=_state([("1A", "7")])),
    Case("record not JSON", ("state.db", "corrupt"), setup=_state([("1A", "{oops")])),
    Case("stage is text", ("state.db", "corrupt"), setup=_state([("1A", _record(stage="one"))])),
    Case("attempts is text", ("state.db", "corrupt"), setup=_state([("1A", _record(attempts="2"))])),
    Case("agent_pid is a float", ("state.db", "corrupt"), setup=_state([("1A", _record(agent_pid=1.5))])),
    Case("findings is text", ("state.db", "corrupt"), setup=_state([("1A", _record(last_findings="x"))])),
    Case("findings hold numbers", ("state.db", "corrupt"), setup=_state([("1A", _record(last_findings=[1]))])),
    Case("title missing", ("state.db", "corrupt"), setup=_state([("1A", json.dumps({"id": "1A", "stage": 1}))])),
    Case("status is null", ("state.db", "corrupt"), setup=_state([("1A", _record(status=None))])),
    Case("run pid is text", ("state.db", "corrupt"), setup=_state([], run=json.dumps({"pid": "12"}))),
    Case("run is a list", ("state.db", "corrupt"), setup=_state([], run="[]")),
    Case("database is garbage", ("state.db", "corrupt"), setup=_file(".orchestrator/state.db")),
]


@pytest.mark.parametrize("case", STATE_CASES, ids=lambda c: c.name)
def test_state_records(planned: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    _run(planned, case, capsys)


# ---------------------------------------------------------------- §5 usage errors write nothing


def _checkout_detached(root: Path) -> None:
    import subprocess

    subprocess.run(("git", "checkout", "-q", "--detach"), cwd=root, check=True)


USAGE_CASES = [
    Case("stage 0", ("--stage 0", "stages: 1, 2"), argv=("--stage", "0")),
    Case("stage -1", ("--stage -1",), argv=("--stage", "-1")),
    Case("stage 99", ("--stage 99",), argv=("--stage", "99")),
    Case("stage 2 before 1", ("stage 2", "1A, 1B"), argv=("--stage", "2")),
    Case("milestone 9Z", ("9Z",), argv=("--milestone", "9Z")),
    Case("milestone empty", ("--milestone", "''"), argv=("--milestone", "")),
    Case("milestone lower case", ("1a", "did you mean 1A"), argv=("--milestone", "1a")),
    Case("milestone junk", ("zz",), argv=("--milestone", "zz")),
    Case("milestone of stage 2", ("milestone 2A", "1A"), argv=("--milestone", "2A")),
    Case("base_branch missing", ("base_branch", "nope", "no such branch"), {"base_branch": "nope"}),
    Case("base_branch dash", ("base_branch", "-x", "valid branch name"), {"base_branch": "-x"}),
    Case("base_branch space", ("base_branch", "not valid", "valid branch name"), {"base_branch": "not valid"}),
    Case("base_branch dots", ("base_branch", "valid branch name"), {"base_branch": "a..b"}),
    Case("base_branch empty", ("base_branch", "valid branch name"), {"base_branch": ""}),
    Case("base_branch lock", ("base_branch", "valid branch name"), {"base_branch": "main.lock"}),
    Case("base_branch a tag", ("base_branch", "no such branch"), {"base_branch": "v1"}, lambda r: _tag(r, "v1")),
    Case("detached HEAD", ("HEAD is detached",), setup=_checkout_detached),
]


def _tag(root: Path, name: str) -> None:
    import subprocess

    subprocess.run(("git", "tag", name), cwd=root, check=True)


@pytest.mark.parametrize("case", USAGE_CASES, ids=lambda c: c.name)
def test_usage_errors(planned: Project, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    _run(planned, case, capsys)


def test_auto_resume_does_not_restart_on_a_bad_input(planned: Project) -> None:
    planned.configure(worktree_dir=".")
    before = fingerprint(planned.root)
    out = planned.run("run", "--auto-resume", env={"ORCHESTRATOR_RESTART_PAUSE": "0"}, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "restarting" not in out.stderr and "worktree_dir" in out.stderr
    assert fingerprint(planned.root) == before


# ---------------------------------------------------------------- §6 warnings and messages


def test_stray_files_in_milestones_are_warned_about(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    folder = planned.root / "milestones"
    (folder / "2A.txt").write_text("x")
    (folder / "notes.md").write_text("x")
    (folder / "2B.md").mkdir()
    assert main(["--project", str(planned.root), "--validate-only"]) == 0
    err = capsys.readouterr().err
    for name in ("milestones/2A.txt", "milestones/notes.md", "milestones/2B.md"):
        assert f"warning: {name}" in err, err


def test_a_lower_case_duplicate_says_it_duplicates(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    (planned.root / "milestones" / "1a.md").write_text("# dup\n\n## Tasks\n- x\n")
    assert main(["--project", str(planned.root), "--validate-only"]) == 2
    err = capsys.readouterr().err
    assert "milestones/1a.md" in err and "duplicates milestone 1A" in err and "rename it to 1A.md" not in err


def test_a_good_project_still_validates(planned: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--project", str(planned.root), "--validate-only", "--stage", "1"]) == 0
    assert main(["--project", str(planned.root), "--validate-only", "--milestone", "1B"]) == 0
    assert "plan OK" in capsys.readouterr().out
    assert not (planned.root / ".orchestrator").exists()

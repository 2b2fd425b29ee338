"""Real projects: each worktree ready to build and test (copy, link, setup, teardown), isolated from
its neighbours (port blocks, slugs), and nothing copied or linked ever committed."""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import Project
from live import agent_started

from orchestrator_lib.config import WorktreeConfig
from orchestrator_lib.state import StateStore
from orchestrator_lib.worktree_prep import assign_ports, pattern_problem, slug_for

SECRET = "tok-5f2c9a81d3e64b7a"


def _port_start() -> int:
    # Tests run in parallel (xdist): each takes its own range, so their servers never meet.
    return 30000 + random.randrange(0, 2500) * 10


def _ignore(project: Project, *patterns: str) -> None:
    (project.root / ".gitignore").write_text("\n".join(patterns) + "\n")


def _committed_paths(project: Project) -> set[str]:
    out = project.git("log", "--all", "--format=", "--name-only")
    return {line for line in out.splitlines() if line}


def _all_text_under(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def _store_records(project: Project) -> dict[str, int]:
    store = StateStore.open(project.root, readonly=True)
    assert store is not None
    try:
        return {mid: rec.port_base for mid, rec in store.milestones().items()}
    finally:
        store.close()


def _sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# ---------------------------------------------------------------- copy


def test_an_ignored_env_file_is_copied_for_the_entry_check_and_the_tests_and_never_committed(project: Project) -> None:
    _ignore(project, ".env", "deps/")
    (project.root / ".env").write_text(f"API_TOKEN={SECRET}\n")
    (project.root / ".worktreeinclude").write_text("# files the worktrees need\n.env\n")
    project.configure(validation={"test_command": 'grep -qx "API_TOKEN=$API_TOKEN" .env && echo token found'})
    project.milestone("1A", entry=["The token is there (`grep -q API_TOKEN .env`)"])
    project.milestone("1B", exit_checks=["The token is readable (`test -r .env`)"])
    project.script({"1B": {"implement": [{"write": {"1B.txt": "b\n"}, "commit": "the agent commits itself"}]}})
    project.commit_plan()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.trailers() == ["1B", "1A"]
    assert ".env" not in _committed_paths(project)
    for text in (out.stdout, out.stderr, _all_text_under(project.root / "logs"), project.show("TASKS.md")):
        assert SECRET not in text
    assert "copied 1 ignored file(s) from the main checkout: .env" in (project.root / "logs" / "1A.log").read_text()


def test_only_files_git_ignores_are_copied(project: Project) -> None:
    _ignore(project, "*.local")
    (project.root / "settings.local").write_text("local\n")
    project.configure(keep_worktrees=True, worktree={"copy": ["*.local", "*.txt"]})
    project.milestone("1A")
    project.commit_plan()
    (project.root / "notes.txt").write_text("untracked, not ignored\n")
    assert project.run().returncode == 0
    worktree = project.root / ".worktree" / "1A"
    assert (worktree / "settings.local").read_text() == "local\n"
    assert not (worktree / "notes.txt").exists()  # not ignored: it is not the runner's to carry


# ---------------------------------------------------------------- link


def test_a_large_ignored_folder_is_linked_not_copied_and_survives_the_cleanup(project: Project) -> None:
    _ignore(project, "deps/")
    big = project.root / "deps" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(1024) * 8 * 1024)  # 8 MB
    project.configure(keep_worktrees=True, worktree={"link": ["deps"]})
    project.milestone("1A", exit_checks=["Dependencies are there (`test -L deps && test -s deps/big.bin`)"])
    project.script({"1A": {"implement": [{"write": {"1A.txt": "a\n"}, "commit": "the agent commits everything"}]}})
    project.commit_plan()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    worktree = project.root / ".worktree" / "1A"
    assert (worktree / "deps").is_symlink()
    assert os.stat(worktree / "deps" / "big.bin").st_ino == os.stat(big).st_ino
    own = sum(os.lstat(p).st_size for p in worktree.rglob("*") if not p.is_symlink() and p.is_file())
    assert own < 100_000
    assert not any(p == "deps" or p.startswith("deps/") for p in _committed_paths(project))
    cleaned = project.run("clean")
    assert cleaned.returncode == 0 and not worktree.exists()
    assert big.stat().st_size == 8 * 1024 * 1024  # removing the worktree removed the link, not the folder


def test_a_changed_lockfile_turns_the_link_into_a_fresh_setup(project: Project) -> None:
    _ignore(project, "deps/")
    (project.root / "deps.lock").write_text("v1\n")
    (project.root / "deps").mkdir()
    (project.root / "deps" / "installed.txt").write_text("v1\n")
    install = "[ -L deps ] || { mkdir -p deps && cp deps.lock deps/installed.txt; }"
    project.configure(worktree={"link": ["deps"], "link_if_unchanged": ["deps.lock"], "setup": [_sh(install)]})
    project.milestone("1A", exit_checks=["Fresh install (`test ! -L deps && grep -q v2 deps/installed.txt`)"])
    project.milestone("1B", exit_checks=["Still linked (`test -L deps && grep -q v1 deps/installed.txt`)"])
    project.script({"1A": {"implement": [{"write": {"deps.lock": "v2\n", "1A.txt": "a\n"}}]}})
    project.commit_plan()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert project.show("deps.lock") == "v2\n"
    assert (project.root / "deps" / "installed.txt").read_text() == "v1\n"  # the main checkout's is untouched
    assert not (project.root / "deps").is_symlink()
    assert "deps.lock changed: deps no longer linked" in (project.root / "logs" / "1A.log").read_text()
    assert not any(p.startswith("deps/") for p in _committed_paths(project))


# ---------------------------------------------------------------- setup and teardown


def test_a_failing_setup_blocks_its_milestone_without_an_agent_run(project: Project) -> None:
    setup = _sh(
        'echo "preparing $ORCHESTRATOR_TASK_SLUG"; [ "$ORCHESTRATOR_TASK_SLUG" != m1b ] || { echo no db; exit 3; }'
    )
    project.configure(worktree={"setup": [setup]})
    project.milestone("1A")
    project.milestone("1B")
    project.commit_plan()
    out = project.run()
    assert out.returncode == 1
    status = {m["id"]: m for m in project.status_json()["milestones"]}
    assert status["1B"]["status"] == "blocked"
    assert "failed (exit 3)" in status["1B"]["reason"] and "no db" in status["1B"]["reason"]
    assert status["1A"]["status"] == "done"
    assert agent_started(project, "1B") == [] and agent_started(project, "1A")
    log = (project.root / "logs" / "1B.log").read_text()
    assert "setup: $ sh -c" in log and "preparing m1b" in log
    assert project.trailers() == []


def test_setup_runs_once_in_order_before_the_entry_checks_and_times_out(project: Project, tmp_path: Path) -> None:
    record = tmp_path / "setup.log"
    project.configure(
        worktree={
            "setup": [_sh(f"echo first >> {record}; echo made > made.txt"), _sh(f"echo second >> {record}")],
        }
    )
    _ignore(project, "made.txt")
    project.milestone("1A", entry=["Setup ran (`test -f made.txt`)"])
    project.commit_plan()
    assert project.run().returncode == 0
    assert record.read_text().split() == ["first", "second", "first", "second"]  # 1A, then the integration
    project.configure(worktree={"setup": [_sh("sleep 30")], "timeout_minutes": 0.02})
    project.milestone("2A")
    project.commit_plan()
    out = project.run(timeout=60)
    assert out.returncode == 1
    assert "timed out after 1s" in project.status_json()["milestones"][1]["reason"]


def test_teardown_runs_before_worktrees_are_removed_and_on_clean(project: Project, tmp_path: Path) -> None:
    record = tmp_path / "teardown.log"
    teardown = _sh(f'echo "$ORCHESTRATOR_TASK_SLUG $ORCHESTRATOR_PORT_BASE $(basename "$PWD")" >> {record}')
    start = _port_start()
    project.configure(worktree={"teardown": [teardown], "port_range_start": start})
    project.milestone("1A")
    project.commit_plan()
    assert project.run().returncode == 0
    lines = sorted(record.read_text().splitlines())
    assert lines == [f"integration {start + 10} _integration", f"m1a {start} 1A"]
    record.unlink()
    project.configure(worktree={"teardown": [teardown], "port_range_start": start}, keep_worktrees=True)
    project.milestone("2A")
    project.commit_plan()
    assert project.run().returncode == 0
    assert "m2a" not in record.read_text()  # kept: not torn down
    assert project.run("clean").returncode == 0
    assert f"m2a {start} 2A" in record.read_text()


# ---------------------------------------------------------------- ports and slugs

SERVER = """\
import os, pathlib, socket, sys, time
port = int(os.environ["ORCHESTRATOR_PORT_BASE"])
slug = os.environ["ORCHESTRATOR_TASK_SLUG"]
meeting = pathlib.Path(sys.argv[1])
with socket.socket() as server:
    server.bind(("127.0.0.1", port))
    server.listen()
    (meeting / slug).write_text(str(port))
    deadline = time.monotonic() + 60
    while len(list(meeting.iterdir())) < 2:  # both servers up at the same time
        if time.monotonic() > deadline:
            sys.exit("the other task never served")
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
"""


def test_two_parallel_tasks_each_serve_on_their_own_port(project: Project, tmp_path: Path) -> None:
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    (project.root / "serve.py").write_text(SERVER)
    start = _port_start()
    project.configure(worktree={"port_range_start": start, "ports_per_task": 5}, review={"enabled": False})
    serve = f"Serves (`{shlex.quote(sys.executable)} serve.py {meeting}`)"
    project.milestone("1A", exit_checks=[serve])
    project.milestone("1B", exit_checks=[serve])
    project.commit_plan()
    out = project.run()
    assert out.returncode == 0, out.stdout + out.stderr
    assert {p.name: int(p.read_text()) for p in meeting.iterdir()} == {"m1a": start, "m1b": start + 5}
    calls = {mid: agent_started(project, mid)[0] for mid in ("1A", "1B")}
    assert (calls["1A"]["port_base"], calls["1A"]["slug"]) == (str(start), "m1a")
    assert (calls["1B"]["port_base"], calls["1B"]["slug"]) == (str(start + 5), "m1b")
    assert f"ORCHESTRATOR_PORT_BASE={start + 5}" in calls["1B"]["prompt"]


def test_plan_shows_the_port_block_and_slug_and_a_resumed_milestone_keeps_its_block(project: Project) -> None:
    start = _port_start()
    project.configure(worktree={"port_range_start": start})
    for mid in ("1A", "1B", "1C"):
        project.milestone(mid)
    project.script({"1B": {"implement": [{"exit": 1}, {"write": {"1B.txt": "b\n"}}]}})
    project.commit_plan()
    preview = project.run("plan", "1B")
    assert "ORCHESTRATOR_TASK_SLUG=m1b" in preview.stdout and f"ORCHESTRATOR_PORT_BASE={start + 10}" in preview.stdout
    assert project.run().returncode == 1
    assert _store_records(project) == {"1A": start, "1B": start + 10, "1C": start + 20}
    assert project.run().returncode == 0
    second = agent_started(project, "1B")[-1]
    assert second["port_base"] == str(start + 10)
    assert project.run("plan", "1B").stdout == second["prompt"]  # what plan shows is what the agent got


def test_port_blocks_never_overlap_and_recorded_blocks_are_kept() -> None:
    w = WorktreeConfig(ports_per_task=10, port_range_start=20000)
    assert assign_ports({}, ["1A", "1B"], w) == {"1A": 20000, "1B": 20010}
    held = {"1A": 20010, "2A": 20000}  # 2A: another unmerged task holding its block
    assert assign_ports(held, ["1A", "1B"], w) == {"1A": 20010, "1B": 20020}
    clash = {"1A": 20005, "1B": 20000}  # blocks from a run with other settings
    got = assign_ports(clash, ["1A", "1B"], w)
    assert abs(got["1A"] - got["1B"]) >= 10


def test_slugs_are_safe_names() -> None:
    assert slug_for("1A") == "m1a" and slug_for("10B") == "m10b" and slug_for("stage1-resolve") == "stage1_resolve"


# ---------------------------------------------------------------- validation


def test_validate_only_checks_the_worktree_section(project: Project) -> None:
    _ignore(project, "node_modules/")
    (project.root / "vendor").mkdir()
    (project.root / "vendor" / "lib.py").write_text("x = 1\n")
    (project.root / ".worktreeinclude").write_text(".env\n../outside\nconfig/[abc\n")
    project.milestone("1A")
    project.commit_plan()
    project.configure(worktree={"link": ["node_modules", "vendor"]})
    out = project.run("--validate-only")
    assert out.returncode == 2
    assert ".worktreeinclude:2: pattern '../outside'" in out.stderr
    assert ".worktreeinclude:3: pattern 'config/[abc': an unclosed `[`" in out.stderr
    assert "`worktree.link[0]` 'node_modules': does not exist in the main checkout" in out.stderr
    assert "`worktree.link[1]` 'vendor': is tracked by git" in out.stderr
    project.configure(worktree={"setup": "npm ci"})
    out = project.run("--validate-only")
    assert out.returncode == 2 and "`worktree.setup` must be a list of argv lists" in out.stderr
    project.configure(worktree={"teardown": ["docker", "rm", "x"]})
    out = project.run()
    assert out.returncode == 2 and "`worktree.teardown[0]` must be an argv list" in out.stderr
    assert not (project.root / ".orchestrator").exists()


def test_pattern_problems() -> None:
    assert pattern_problem(".env") is None and pattern_problem("!config/*.local.json") is None
    assert pattern_problem(r"literal\[x") is None and pattern_problem("[ab]c") is None
    assert pattern_problem("/") and pattern_problem("a/../b") and pattern_problem("x[")


# ---------------------------------------------------------------- a real Python project


def _wheel(folder: Path, name: str, source: str) -> None:
    """A minimal pure-Python wheel, made by hand: pip installs it without network or build tools."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            whl.writestr(path, text)


def test_a_python_project_tests_pass_in_its_bootstrapped_venv(project: Project, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "slugkit", "def slugify(text):\n    return '-'.join(text.lower().split())\n")
    _wheel(wheels, "shoutkit", "def shout(text):\n    return text.upper() + '!'\n")
    root = project.root
    _ignore(project, ".venv/", "__pycache__/")
    (root / "requirements.txt").write_text("slugkit\n")
    (root / "titles").mkdir()
    (root / "titles" / "__init__.py").write_text(
        "from slugkit import slugify\n\n\ndef url(title):\n    return slugify(title)\n"
    )
    (root / "tests").mkdir()
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "test_titles.py").write_text(
        "import unittest\nfrom titles import url\n\n\nclass T(unittest.TestCase):\n"
        "    def test_url(self):\n        self.assertEqual(url('Hello World'), 'hello-world')\n"
    )
    pip = f"{shlex.quote(sys.executable)} -m pip --python .venv/bin/python install -q --no-index"
    install = f"{pip} --find-links {shlex.quote(str(wheels))} -r requirements.txt"
    venv = f"{shlex.quote(sys.executable)} -m venv --without-pip .venv"
    bootstrap = f"[ -L .venv ] || {{ {venv} && {install}; }}"
    tests = ".venv/bin/python -m unittest discover -s tests -t . -q"
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "A small Python project")
    subprocess.run(_sh(bootstrap), cwd=root, check=True)  # the user's own checkout, set up once
    project.configure(
        worktree={"link": [".venv"], "link_if_unchanged": ["requirements.txt"], "setup": [_sh(bootstrap)]},
        validation={"test_command": tests},
        review={"enabled": False},
    )
    project.milestone("1A", tasks="- Add `titles/loud.py`.")
    loud = "from shoutkit import shout\n\n\ndef loud(title):\n    return shout(title)\n"
    test = (
        "import unittest\nfrom titles.loud import loud\n\n\nclass L(unittest.TestCase):\n"
        "    def test_loud(self):\n        self.assertEqual(loud('hi'), 'HI!')\n"
    )
    project.script(
        {
            "1A": {
                "implement": [
                    {
                        "write": {
                            "titles/loud.py": loud,
                            "tests/test_loud.py": test,
                            "requirements.txt": "slugkit\nshoutkit\n",
                        }
                    }
                ]
            }
        }
    )
    project.commit_plan()
    out = project.run(timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr + (root / "logs" / "1A.log").read_text()
    assert project.show("requirements.txt") == "slugkit\nshoutkit\n"
    assert "Ran 2 tests" in (root / "logs" / "1A.log").read_text()
    assert not list((root / ".venv").rglob("shoutkit*"))  # the fresh install went to the worktree, not here
    assert not any(p.startswith(".venv") for p in _committed_paths(project))
    assert project.statuses() == {"1A": "merged"}

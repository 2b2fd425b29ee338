"""Property-based tests: whatever text or bytes the user's files hold, the runner answers with a
clear problem naming the file (exit 2) or accepts them; never a traceback, never exit 3.

The Hypothesis profile (tests/conftest.py) bounds the examples and keeps no database in the
repository; `HYPOTHESIS_PROFILE=deep` runs many more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import string
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import orchestrator
from orchestrator_lib.config import CONFIG_FILE, Config, load_config
from orchestrator_lib.errors import UsageError
from orchestrator_lib.plan import Problem, check_plan, load_plan, parse_estimate

# Pieces of milestone files, so the fuzzer reaches deep into the parser rather than
# stopping at "no title" on every input.
FRAGMENTS = [
    "# ",
    "## ",
    "### ",
    "## Description\n",
    "## Entry Requirements\n",
    "## Tasks\n",
    "## Exit Criteria\n",
    "## Dependencies\n",
    "## Estimated Time\n",
    "- ",
    "* ",
    "1. ",
    "\n",
    "\r\n",
    "\r",
    "None",
    "1A",
    "1a",
    "0A",
    "01A",
    "2B",
    "99Z",
    "1A, 2B",
    "`",
    "```\n",
    "(`true`)",
    "(`test -f x`)",
    "`src/app.py`",
    "9" * 400,
    "1e999",
    "1.5",
    "-3",
    "0",
    " hours",
    "h",
    " day",
    "m",
    "~",
    "about ",
    " - ",
    "(note)",
    "|",
    "<<<<<<< ours\n=======\n>>>>>>> theirs\n",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\ufeff",
    "ünïcode",
    "  ",
    "\t",
    ">",
    "<!-- x -->",
    "[link](x)",
    "**",
]

markdownish = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=40).map("".join)
milestone_bytes = st.one_of(
    markdownish.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def well_formed(mid: str, deps: str, estimate: str) -> str:
    return (
        f"# Milestone {mid}\n\n## Description\nd\n\n## Tasks\n- work\n\n## Exit Criteria\n- done\n\n"
        f"## Dependencies\n{deps}\n\n## Estimated Time\n{estimate}\n"
    )


@contextlib.contextmanager
def plan_dir(files: dict[str, bytes]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-plan-") as tmp:
        root = Path(tmp)
        (root / "milestones").mkdir()
        for name, data in files.items():
            (root / "milestones" / name).write_bytes(data)
        yield root


def assert_named(problems: list[Problem], names: set[str]) -> None:
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.path in {f"milestones/{n}" for n in names} | {"milestones"}, problem
        assert problem.message.strip(), problem
        assert str(problem).startswith(problem.path)


# ---------------------------------------------------------------- the milestone parser


@given(data=milestone_bytes)
def test_any_milestone_file_parses_or_is_a_problem_naming_it(data: bytes) -> None:
    with plan_dir({"1A.md": data}) as root:
        plan, problems = load_plan(root / "milestones", root)
    assert_named(problems, {"1A.md"})
    if not problems:
        assert [m.id for m in plan.milestones] == ["1A"]


numbers = st.one_of(
    st.integers(min_value=0, max_value=10**500).map(str),
    st.floats(min_value=0, allow_nan=False).map(repr),
    st.sampled_from(["1e999", "9" * 400, "0.0", ".5", "1.", "١٢"]),
)
estimates = st.one_of(
    markdownish,
    st.tuples(numbers, st.sampled_from(["h", " hours", "m", " min", " day", " days", "w"])).map("".join),
    st.tuples(numbers, st.sampled_from(["-", " to ", "–"]), numbers, st.sampled_from(["h", " hours"])).map("".join),
)


@given(estimate=estimates)
def test_any_estimate_is_minutes_or_a_problem(estimate: str) -> None:
    minutes = parse_estimate(estimate)
    assert minutes is None or (isinstance(minutes, int) and minutes >= 0)
    with plan_dir({"1A.md": well_formed("1A", "None", estimate).encode("utf-8", "surrogatepass")}) as root:
        _plan, problems = load_plan(root / "milestones", root)
    assert_named(problems, {"1A.md"})


# ---------------------------------------------------------------- the plan checks

ids = st.sampled_from(["1A", "1B", "2A", "2B", "3A", "1a", "4Z", "0A"])


@given(
    deps=st.dictionaries(
        st.sampled_from(["1A", "1B", "2A", "2B", "3A"]),
        st.lists(st.one_of(ids, st.sampled_from(["None", "", "1A, 2A", "- 2B", "`1A`"]), markdownish), max_size=4),
        min_size=1,
        max_size=5,
    )
)
def test_any_dependency_graph_is_checked_without_a_crash(deps: dict[str, list[str]]) -> None:
    files = {
        f"{mid}.md": well_formed(mid, "\n".join(f"- {d}" for d in listed) or "None", "1 hour").encode(
            "utf-8", "surrogatepass"
        )
        for mid, listed in deps.items()
    }
    with plan_dir(files) as root:
        plan, problems = load_plan(root / "milestones", root)
        assert_named(problems, set(files))
        again = check_plan(plan.milestones, root)  # the checks alone, on whatever was read
    assert all(isinstance(p, Problem) for p in again)


# ---------------------------------------------------------------- the config loader

SECTIONS = [t for t in Config.__dataclass_fields__.values() if dataclasses.is_dataclass(t.default)]
KEYS = sorted(
    {f.name for f in dataclasses.fields(Config)}
    | {f.name for s in SECTIONS for f in dataclasses.fields(s.default)}
    | {"agent.preset", "nope", ""}
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
        st.sampled_from([".", "..", "", "/", ".git", "a/../..", "\x00", "-x", "a b", "TASKS.md", "~"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), children)
    ),
    max_leaves=8,
)
config_objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)
config_bytes = st.one_of(
    config_objects.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(alphabet=string.printable + '{}[]":,ü\x00', max_size=200).map(str.encode),
)


@given(
    data=config_bytes, level=st.sampled_from(["", "debug", "LOUD", "\x00"]), resume=st.sampled_from(["", "yes", "2"])
)
def test_any_config_loads_or_is_a_usage_error_naming_the_file(data: bytes, level: str, resume: str) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as tmp:
        path = Path(tmp) / CONFIG_FILE
        path.write_bytes(data)
        environ = {k: v for k, v in (("LOG_LEVEL", level), ("AUTO_RESUME", resume)) if v}
        try:
            config = load_config(path, environ)
        except UsageError as e:
            named = [CONFIG_FILE, *environ]
            assert any(n in str(e) for n in named), str(e)
            return
    assert isinstance(config, Config)


# ---------------------------------------------------------------- the real entry point


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-repo") / "repo"
    root.mkdir()
    for args in (("init", "-q", "-b", "main"), ("config", "user.email", "t@e"), ("config", "user.name", "T")):
        subprocess.run(("git", *args), cwd=root, check=True)
    (root / "README.md").write_text("# fuzz\n")
    subprocess.run(("git", "add", "-A"), cwd=root, check=True)
    subprocess.run(("git", "commit", "-qm", "init"), cwd=root, check=True)
    return root


def validate(root: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = orchestrator.main(["--validate-only", "--project", str(root)])
    return code, err.getvalue()


@given(config=st.one_of(st.none(), config_bytes), milestone=milestone_bytes)
def test_validate_only_exits_0_or_2_naming_the_file(repo: Path, config: bytes | None, milestone: bytes) -> None:
    shutil.rmtree(repo / "milestones", ignore_errors=True)
    (repo / "milestones").mkdir()
    (repo / "milestones" / "1A.md").write_bytes(milestone)
    (repo / "milestones" / "1B.md").write_bytes(well_formed("1B", "None", "1 hour").encode())
    (repo / CONFIG_FILE).unlink(missing_ok=True)
    if config is not None:
        (repo / CONFIG_FILE).write_bytes(config)
    code, err = validate(repo)
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        assert CONFIG_FILE in err or "milestones/1A.md" in err, err
    for runtime in (".orchestrator", "logs", ".worktree", "TASKS.md"):
        assert not (repo / runtime).exists(), f"--validate-only wrote {runtime}"

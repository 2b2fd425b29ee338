from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from orchestrator_lib.plan import (
    Check,
    Milestone,
    Plan,
    Problem,
    check_plan,
    load_plan,
    milestone_id_problem,
    parse_estimate,
    parse_milestone,
    stray_entries,
)

MINIMAL = "# Title\n\n## Tasks\n\n- Do it.\n"


def write(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write milestone files (dedented) under root/milestones; return the folder."""
    folder = root / "milestones"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return folder


def load(root: Path, files: Mapping[str, str | bytes]) -> tuple[Plan, list[str]]:
    plan, problems = load_plan(write(root, files), root)
    return plan, [str(problem) for problem in problems]


def load_one(root: Path, text: str) -> Milestone:
    plan, problems = load(root, {"1A.md": text})
    assert problems == []
    (milestone,) = plan.milestones
    return milestone


GREETING = """\
# Greeting module

## Description

Add a `greet(name)` function.

## Entry Requirements

- The package imports (`python -c "import app"`)
- The team agreed on the wording

## Tasks

1. Write `app/greeting.py`:

   ```python
   def greet(name):

       return f"Hello, {name}!"
   ```
2. Add tests.

## Exit Criteria

- Tests pass (`pytest -q tests/test_greeting.py`)
- Lint is clean: `ruff check app` and `mypy app`
- The wording reads well

## Dependencies

None

## Estimated Time

2 hours
"""


def test_valid_multi_stage_plan(tmp_path: Path) -> None:
    plan, problems = load(
        tmp_path,
        {
            "1A.md": GREETING,
            "1B.md": "# Config\n\n## Tasks\n\nRead config.\n\n## Estimated Time\n90m\n",
            "2A.md": """\
                # CLI

                ## Tasks
                - Wire greeting and config into the CLI.

                ## Dependencies
                - 1A (greeting module)
                - 1B
                """,
            "10B.md": "# Release\n\n## Tasks\nShip.\n\n## Dependencies\n2A\n",
        },
    )

    assert problems == []
    assert [m.id for m in plan.milestones] == ["1A", "1B", "2A", "10B"]
    assert plan.stages() == [1, 2, 10]
    assert [m.id for m in plan.in_stage(1)] == ["1A", "1B"]
    assert plan.in_stage(3) == ()
    assert plan.get("1a") is None

    greeting = plan.get("1A")
    assert greeting is not None
    assert (greeting.id, greeting.stage, greeting.task) == ("1A", 1, "A")
    assert greeting.title == "Greeting module"
    assert greeting.path == tmp_path / "milestones" / "1A.md"
    assert greeting.description == "Add a `greet(name)` function."
    assert greeting.entry == (
        Check(
            'The package imports (`python -c "import app"`)',
            'python -c "import app"',
            9,
        ),
        Check("The team agreed on the wording", None, 10),
    )
    assert greeting.exit_criteria == (
        Check(
            "Tests pass (`pytest -q tests/test_greeting.py`)",
            "pytest -q tests/test_greeting.py",
            25,
        ),
        Check("Lint is clean: `ruff check app` and `mypy app`", "ruff check app", 26),
        Check("The wording reads well", None, 27),
    )
    assert greeting.dependencies == ()
    assert greeting.estimate_minutes == 120
    assert greeting.text == GREETING

    cli = plan.get("2A")
    assert cli is not None
    assert cli.dependencies == ("1A", "1B")
    assert cli.estimate_minutes is None
    assert cli.tasks == "- Wire greeting and config into the CLI."
    assert [m.estimate_minutes for m in plan.in_stage(1)] == [120, 90]
    assert plan.milestones[-1].dependencies == ("2A",)


def test_fenced_code_in_tasks_is_kept_verbatim(tmp_path: Path) -> None:
    milestone = load_one(tmp_path, GREETING)

    assert milestone.tasks == (
        "1. Write `app/greeting.py`:\n"
        "\n"
        "   ```python\n"
        "   def greet(name):\n"
        "\n"
        '       return f"Hello, {name}!"\n'
        "   ```\n"
        "2. Add tests."
    )


def test_tasks_keep_subheadings_and_top_level_fences(tmp_path: Path) -> None:
    text = "# T\n\n## Tasks\n\n### Step 1\n\n```sh\n## not a heading\n```\n\n## Notes\nx\n"

    milestone = load_one(tmp_path, text)

    assert milestone.tasks == "### Step 1\n\n```sh\n## not a heading\n```"


def test_odd_casing_trailing_colons_and_markup(tmp_path: Path) -> None:
    milestone = load_one(
        tmp_path,
        """\
        # The **greeting** `module`

        ## DESCRIPTION:
        Say hello.

        ## entry requirements :
        * Python works (`python -V`)

        ## TaSkS:
        Write it.

        Exit Criteria:
        ---

        - Done (`true`)

        ## dependencies
        ## ESTIMATED TIME:
        45 min
        """,
    )

    assert milestone.title == "The greeting module"
    assert milestone.description == "Say hello."
    assert milestone.entry == (Check("Python works (`python -V`)", "python -V", 7),)
    assert milestone.tasks == "Write it."
    assert milestone.exit_criteria == (Check("Done (`true`)", "true", 15),)
    assert milestone.dependencies == ()
    assert milestone.estimate_minutes == 45


def test_unknown_sections_are_kept_in_the_text(tmp_path: Path) -> None:
    text = MINIMAL + "\n## Notes for the agent\n\nPrefer small commits.\n"

    milestone = load_one(tmp_path, text)

    assert milestone.text == text
    assert milestone.tasks == "- Do it."


def test_description_falls_back_to_text_under_the_title(tmp_path: Path) -> None:
    milestone = load_one(tmp_path, "# T\n\nWhat this is about.\n\n## Tasks\nx\n")

    assert milestone.description == "What this is about."


def test_code_spans_in_prose_items(tmp_path: Path) -> None:
    milestone = load_one(
        tmp_path,
        """\
        # T
        ## Tasks
        x
        ## Exit Criteria
        - `greet("Ada")` returns `Hello, Ada!`
        - The **docs** mention *greeting*
        - Runs on CI with
          `make check` and more text
        - A blank span ` ` is not a command
        """,
    )

    assert milestone.exit_criteria == (
        Check('`greet("Ada")` returns `Hello, Ada!`', 'greet("Ada")', 5),
        Check("The **docs** mention *greeting*", None, 6),
        Check("Runs on CI with `make check` and more text", "make check", 7),
        Check("A blank span ` ` is not a command", None, 9),
    )


def test_nested_items_are_checks_and_none_items_are_skipped(tmp_path: Path) -> None:
    milestone = load_one(
        tmp_path,
        """\
        # T
        ## Entry Requirements
        - None
        ## Tasks
        x
        ## Exit Criteria
        - All of these pass:
          - `pytest`
          - `ruff check .`

          A note under the item, not a check.
        """,
    )

    assert milestone.entry == ()
    assert milestone.exit_criteria == (
        Check("All of these pass:", None, 7),
        Check("`pytest`", "pytest", 8),
        Check("`ruff check .`", "ruff check .", 9),
    )


@pytest.mark.parametrize(
    "section",
    [
        "## Dependencies\nNone\n",
        "## Dependencies\nnone\n",
        "## Dependencies\n-\n",
        "## Dependencies\n- None\n",
        "## Dependencies\n\n",
        "## Dependencies\nN/A.\n",
        "",
    ],
)
def test_no_dependencies(tmp_path: Path, section: str) -> None:
    assert load_one(tmp_path, MINIMAL + section).dependencies == ()


def test_dependency_forms(tmp_path: Path) -> None:
    text = """\
        # T
        ## Tasks
        x
        ## Dependencies
        - 1A (greeting module)
        - `1B`: config

        1C, 1D and 2A
        2A
        """
    plan, problems = load(
        tmp_path,
        {f"{i}.md": MINIMAL for i in ("1A", "1B", "1C", "1D", "2A")} | {"3A.md": text},
    )

    assert problems == []
    assert plan.milestones[-1].dependencies == ("1A", "1B", "1C", "1D", "2A")


@pytest.mark.parametrize(
    ("written", "minutes"),
    [
        ("2 hours", 120),
        ("1 hour", 60),
        ("30 minutes", 30),
        ("1 minute", 1),
        ("1.5h", 90),
        ("90m", 90),
        ("2-3 hours", 180),
        ("2 – 3 hours", 180),
        ("2 to 3 hours", 180),
        ("30m-1h", 60),
        ("1 day", 480),
        ("2 days", 960),
        ("1d", 480),
        ("45 min", 45),
        ("45 mins", 45),
        ("1h 30m", 90),
        ("1h30m", 90),
        ("1 hour and 30 minutes", 90),
        ("1 hr, 15 min", 75),
        ("3 HRS", 180),
        ("~2h", 120),
        ("about 4 hours", 240),
        ("2 hours (mostly tests)", 120),
        ("2h - a guess", 120),
        ("**2 hours**", 120),
    ],
)
def test_estimate_forms(tmp_path: Path, written: str, minutes: int) -> None:
    text = f"{MINIMAL}\n## Estimated Time\n\n{written}\n"

    assert load_one(tmp_path, text).estimate_minutes == minutes


@pytest.mark.parametrize("written", ["two hours", "2", "2 hours per day", "soon", "2 months", "1,5h", ""])
def test_unreadable_estimates(written: str) -> None:
    assert parse_estimate(written) is None


def test_estimate_as_list_item(tmp_path: Path) -> None:
    text = f"{MINIMAL}\n## Estimated Time\n\n- 2-3 hours\n"

    assert load_one(tmp_path, text).estimate_minutes == 180


def test_numeric_stage_order(tmp_path: Path) -> None:
    plan, problems = load(tmp_path, {name: MINIMAL for name in ("10B.md", "2A.md", "10A.md", "1C.md")})

    assert problems == []
    assert [m.id for m in plan.milestones] == ["1C", "2A", "10A", "10B"]
    assert plan.stages() == [1, 2, 10]


def test_readme_other_files_and_folders_are_ignored(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        {
            "1A.md": MINIMAL,
            "README.md": "# About this plan\n",
            "notes.txt": "x",
            ".#1A.md": "x",
        },
    )
    (folder / "old.md").mkdir()

    plan, problems = load_plan(folder, tmp_path)

    assert problems == []
    assert [m.id for m in plan.milestones] == ["1A"]


def test_crlf_and_byte_order_mark(tmp_path: Path) -> None:
    text = "# T\r\n\r\n## Tasks\r\n\r\nx\r\n\r\n## Exit Criteria\r\n- ok (`true`)\r\n"

    milestone = load_one(tmp_path, "\ufeff" + text)

    assert milestone.title == "T"
    assert milestone.exit_criteria == (Check("ok (`true`)", "true", 8),)


# ---------------------------------------------------------------- problems


def test_missing_directory(tmp_path: Path) -> None:
    plan, problems = load_plan(tmp_path / "milestones", tmp_path)

    assert plan == Plan(())
    assert [str(p) for p in problems] == [
        (
            "milestones: directory not found: create it (mkdir milestones) "
            "and add one file per milestone, e.g. milestones/1A.md"
        )
    ]


def test_directory_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "milestones").write_text("")

    _, problems = load_plan(tmp_path / "milestones", tmp_path)

    assert problems == [
        Problem(
            "milestones",
            0,
            "is not a directory: put one file per milestone in a directory",
        )
    ]


def test_no_milestone_files(tmp_path: Path) -> None:
    _, problems = load(tmp_path, {"README.md": "# Plan\n"})

    assert problems == ["milestones: no milestone files: add one per milestone, e.g. milestones/1A.md"]


def test_bad_file_names(tmp_path: Path) -> None:
    plan, problems = load(
        tmp_path,
        {
            "1A.md": MINIMAL,
            "1a.md": MINIMAL,
            "01B.md": MINIMAL,
            "notes.md": "",
            "1AB.md": "",
            "2B.MD": "",
        },
    )

    expected = "expected a stage number without leading zeros and one capital letter, e.g. 1A.md"
    assert [m.id for m in plan.milestones] == ["1A"]
    assert problems == [
        f"milestones/01B.md: bad file name '01B.md': {expected}; rename it to 1B.md",
        f"milestones/1AB.md: bad file name '1AB.md': {expected}",
        "milestones/1a.md: '1a.md' duplicates milestone 1A (1A.md is there too): keep one of them",
        f"milestones/2B.MD: bad file name '2B.MD': {expected}; rename it to 2B.md",
    ]
    warnings = [str(w) for w in stray_entries(tmp_path / "milestones", tmp_path)]
    assert warnings == ["milestones/notes.md: not a milestone file (those are named like 1A.md): it is ignored"]


def test_a_loosely_named_milestone_is_told_to_rename(tmp_path: Path) -> None:
    _, problems = load(tmp_path, {"1b.md": MINIMAL})

    assert problems == [
        "milestones/1b.md: bad file name '1b.md': expected a stage number without leading zeros and one capital "
        "letter, e.g. 1A.md; rename it to 1B.md"
    ]


def test_files_and_folders_that_are_not_milestones_are_warned_about(tmp_path: Path) -> None:
    folder = write(tmp_path, {"1A.md": MINIMAL, "2A.txt": "x", "notes.md": "x", "README.md": "x", ".#1A.md": "x"})
    (folder / "2B.md").mkdir()

    plan, problems = load_plan(folder, tmp_path)

    assert problems == [] and [m.id for m in plan.milestones] == ["1A"]
    assert [w.path for w in stray_entries(folder, tmp_path)] == [
        "milestones/2A.txt",
        "milestones/2B.md",
        "milestones/notes.md",
    ]
    assert "folder named like a milestone file" in str(stray_entries(folder, tmp_path)[1])


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    plan, problems = load(tmp_path, {"1A.md": b"# Caf\xc3\xa9\n\n## Tasks\nna\xefve\n"})

    assert plan.milestones == ()
    assert problems == ["milestones/1A.md:4: not valid UTF-8 (byte 0xef): save the file as UTF-8"]


def test_unreadable_file_is_reported_and_not_depended_on_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write(tmp_path, {"1A.md": MINIMAL, "2A.md": MINIMAL + "## Dependencies\n1A\n"})
    read_bytes = Path.read_bytes

    def refuse_1a(path: Path) -> bytes:
        # Running as root makes chmod useless, so refuse the read directly.
        if path.name == "1A.md":
            raise PermissionError(13, "Permission denied")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_1a)

    plan, problems = load_plan(folder, tmp_path)

    assert [m.id for m in plan.milestones] == ["2A"]
    assert [str(p) for p in problems] == ["milestones/1A.md: cannot read the file: Permission denied"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "## Tasks\nx\n",
            "milestones/1A.md: no title: start the file with a heading such as '# Greeting module'",
        ),
        (
            "#\n## Tasks\nx\n",
            "milestones/1A.md:1: the title is empty: write the milestone's name after '#'",
        ),
        (
            "# T\n\n## Description\nx\n",
            "milestones/1A.md: no '## Tasks' section: add one that lists the work for the agent",
        ),
        (
            "# T\n\n## Tasks\n\n\n## Exit Criteria\n- x\n",
            "milestones/1A.md:3: the Tasks section is empty: list the work for the agent",
        ),
        (
            "# T\n\n### Tasks:\n- x\n",
            "milestones/1A.md:3: 'Tasks' must be a level-2 heading: write '## Tasks'",
        ),
        (
            "# T\n## Tasks\nx\n## tasks\ny\n",
            "milestones/1A.md:4: second '## tasks' section (the first is at line 2): merge them into one",
        ),
        (
            MINIMAL + "## Estimated Time\nsoon\n",
            (
                "milestones/1A.md:7: cannot read the estimate 'soon': "
                "write e.g. '2 hours', '90m', '1h 30m', '2-3 hours' or '1 day'"
            ),
        ),
        (
            MINIMAL + "## Estimated Time\n\n",
            (
                "milestones/1A.md:6: the Estimated Time section is empty: "
                "write e.g. '2 hours', '90m', '1h 30m', '2-3 hours' or '1 day', or remove it"
            ),
        ),
        (
            MINIMAL + "## Estimated Time\n0 minutes\n",
            "milestones/1A.md:7: the estimate '0 minutes' is zero: give the expected time",
        ),
        (
            MINIMAL + "## Dependencies\n- 0a\n",
            (
                "milestones/1A.md:7: dependency '0a' is not a milestone id "
                "(expected a stage number and a capital letter, e.g. 1A)"
            ),
        ),
        (
            MINIMAL + "## Dependencies\n- 1a (greeting)\n",
            (
                "milestones/1A.md:7: dependency '1a' is not a milestone id "
                "(expected a stage number and a capital letter, e.g. 1A): did you mean 1A?"
            ),
        ),
        (
            MINIMAL + "## Dependencies\nThis needs the greeting module.\n",
            (
                "milestones/1A.md:7: dependency 'This needs the greeting module.' does not start "
                "with a milestone id: list one per line, e.g. '- 1A (greeting module)', or write None"
            ),
        ),
        (
            MINIMAL + "## Dependencies\n- 1A\n",
            "milestones/1A.md:7: 1A depends on itself: remove 1A from its Dependencies",
        ),
        (
            MINIMAL + "## Dependencies\n- 9Z\n",
            (
                "milestones/1A.md:7: 1A depends on 9Z, which is not in the plan: "
                "add milestones/9Z.md or remove the dependency"
            ),
        ),
    ],
)
def test_problem_in_one_file(tmp_path: Path, text: str, expected: str) -> None:
    _, problems = load(tmp_path, {"1A.md": text})

    assert problems == [expected]


def test_dependency_on_same_and_later_stage_and_cycle(tmp_path: Path) -> None:
    _, problems = load(
        tmp_path,
        {
            "1A.md": MINIMAL + "## Dependencies\n- 1B\n",
            "1B.md": MINIMAL + "## Dependencies\n\n- 1A is fine\n- 2A (later)\n",
            "2A.md": MINIMAL,
        },
    )

    assert problems == [
        (
            "milestones/1A.md:7: 1A depends on 1B in the same stage; tasks of a stage run "
            "in parallel: move 1B to an earlier stage"
        ),
        ("milestones/1A.md:7: dependency cycle 1A -> 1B -> 1A: no order satisfies it; remove one of these"),
        (
            "milestones/1B.md:8: 1B depends on 1A in the same stage; tasks of a stage run "
            "in parallel: move 1A to an earlier stage"
        ),
        ("milestones/1B.md:9: 1B depends on 2A in a later stage (2); stages run in order: move 2A to a stage before 1"),
    ]


def test_cycle_across_stages_is_reported_once(tmp_path: Path) -> None:
    _, problems = load(
        tmp_path,
        {
            "1A.md": MINIMAL + "## Dependencies\n- 3A\n",
            "2A.md": MINIMAL + "## Dependencies\n- 1A\n",
            "3A.md": MINIMAL + "## Dependencies\n- 2A\n",
        },
    )

    assert [p for p in problems if "cycle" in p] == [
        ("milestones/1A.md:7: dependency cycle 1A -> 3A -> 2A -> 1A: no order satisfies it; remove one of these")
    ]
    assert len(problems) == 2  # the cycle and 1A's dependency on a later stage


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    plan, problems = load(
        tmp_path,
        {
            "1A.md": "No title here.\n\n## Tasks\nx\n",
            "1B.md": MINIMAL + "## Estimated Time\nwhenever\n",
            "2A.md": MINIMAL + "## Dependencies\n- 1A\n- 7C\n",
            "README.md": "ignored",
            "setup.md": MINIMAL,
        },
    )

    assert [m.id for m in plan.milestones] == ["1A", "1B", "2A"]
    assert [p.split(": ", 1)[0] for p in problems] == ["milestones/1A.md", "milestones/1B.md:7", "milestones/2A.md:8"]
    assert [str(w).split(": ", 1)[0] for w in stray_entries(tmp_path / "milestones", tmp_path)] == [
        "milestones/setup.md"
    ]


def test_problems_of_one_file_come_in_line_order(tmp_path: Path) -> None:
    text = "## Dependencies\n- 5A\n- 1A\n## Estimated Time\nlater\n"

    _, problems = load(tmp_path, {"1A.md": text})

    assert [p.split(": ", 1)[0] for p in problems] == [
        "milestones/1A.md",  # no title
        "milestones/1A.md",  # no Tasks
        "milestones/1A.md:2",
        "milestones/1A.md:3",
        "milestones/1A.md:5",
    ]


def test_duplicate_ids_within_a_plan(tmp_path: Path) -> None:
    one = write(tmp_path, {"1A.md": MINIMAL})
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "1A.md").write_text(MINIMAL)
    first, _ = parse_milestone(one / "1A.md", MINIMAL, "milestones/1A.md")
    second, _ = parse_milestone(other / "1A.md", MINIMAL, "elsewhere/1A.md")
    assert first is not None and second is not None

    problems = check_plan([first, second], tmp_path)

    assert [str(p) for p in problems] == ["elsewhere/1A.md: duplicate milestone id 1A (also milestones/1A.md)"]


def test_parse_milestone_with_a_bad_name(tmp_path: Path) -> None:
    milestone, problems = parse_milestone(tmp_path / "intro.md", MINIMAL, "plan/intro.md")

    assert milestone is None
    assert [p.path for p in problems] == ["plan/intro.md"]


def test_problem_str() -> None:
    assert str(Problem("milestones/1A.md", 3, "bad")) == "milestones/1A.md:3: bad"
    assert str(Problem("milestones/1A.md", 0, "bad")) == "milestones/1A.md: bad"


def test_paths_outside_the_root_are_shown_as_given(tmp_path: Path) -> None:
    folder = write(tmp_path, {"1A.md": "# T\n"})

    _, problems = load_plan(folder, tmp_path / "elsewhere")

    assert problems[0].path == (folder / "1A.md").as_posix()


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("text", ["1A", "2C", "10B", "123Z"])
def test_valid_milestone_ids(text: str) -> None:
    assert milestone_id_problem(text) is None


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("1a", ": did you mean 1A?"),
        ("01A", ": did you mean 1A?"),
        ("0A", ""),
        ("A1", ""),
        ("1AB", ""),
        ("", ""),
    ],
)
def test_invalid_milestone_ids(text: str, hint: str) -> None:
    assert milestone_id_problem(text) == (
        f"'{text}' is not a milestone id (expected a stage number and a capital letter, e.g. 1A)" + hint
    )

"""The plan: milestone Markdown files parsed into records and checked as a whole.

Files are named STAGE+TASK (`milestones/1A.md`). Stages run in order and the
tasks of one stage run in parallel, so a milestone may depend only on milestones
of earlier stages. `load_plan` reports every problem at once, each with its file
and line, so a plan is fixed in one pass instead of one error per run.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from markdown_it import MarkdownIt
from markdown_it.token import Token

from orchestrator_lib.redact import strip_line

_ID = re.compile(r"[1-9][0-9]*[A-Z]")
_FILE_NAME = re.compile(r"([1-9][0-9]*[A-Z])\.md")
# What a careless hand writes for an id ("1a", "01A"): enough to suggest the fix.
_LOOSE_ID = re.compile(r"0*([0-9]+)([A-Za-z])")
_IGNORED_FILES = frozenset({"readme.md"})
# Written in Dependencies, Entry Requirements or Exit Criteria to say "nothing".
_NOTHING = frozenset({"none", "n/a", "-", "—"})

_DESCRIPTION = "description"
_ENTRY = "entry requirements"
_TASKS = "tasks"
_EXIT = "exit criteria"
_DEPENDENCIES = "dependencies"
_ESTIMATE = "estimated time"
_AGENT = "agent"
_KNOWN_SECTIONS = (_DESCRIPTION, _ENTRY, _TASKS, _EXIT, _DEPENDENCIES, _ESTIMATE, _AGENT)
_SETTING = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\s*:\s*(.*)", re.DOTALL)  # a wrong key is named later
_SETTING_EXAMPLE = "write one setting per item, '- key: value', e.g. '- model: claude-opus-4-5'"

# A day of agent work is a working day, not 24 hours of wall clock.
MINUTES_PER_DAY = 8 * 60
# Keyed by the unit's first letter: d(ays), h(ours), m(inutes).
_UNIT_MINUTES = {"d": MINUTES_PER_DAY, "h": 60, "m": 1}
_NUMBER = r"\d+(?:\.\d+)?"
# Longest spellings first so "min" is not read as "m" followed by junk.
_UNIT = r"(?:days?|d|hours?|hrs?|h|minutes?|mins?|m)(?![a-z])"
_ESTIMATE_PREFIX = re.compile(r"^\s*(?:~|about\b|around\b|approx(?:imately\b|\.)?)?\s*", re.IGNORECASE)
_ESTIMATE_TERM = re.compile(
    rf"\s*(?:(?:,|\+|and\b)\s*)?"
    rf"(?:(?P<low>{_NUMBER})\s*(?P<low_unit>{_UNIT})?\s*(?:-|–|—|to\b)\s*)?"
    rf"(?P<high>{_NUMBER})\s*(?P<unit>{_UNIT})",
    re.IGNORECASE,
)
# After the duration only a note may follow: "2 hours (mostly tests)", "2h - rough".
_NOTE_STARTS = "([-–—:;,."
_ESTIMATE_EXAMPLES = "e.g. '2 hours', '90m', '1h 30m', '2-3 hours' or '1 day'"

_NO_TITLE = "no title: start the file with a heading such as '# Greeting module'"
_EMPTY_TITLE = "the title is empty: write the milestone's name after '#'"
_NO_TASKS = "no '## Tasks' section: add one that lists the work for the agent"
_EMPTY_TASKS = "the Tasks section is empty: list the work for the agent"
_MISPLACED_TASKS = "'Tasks' must be a level-2 heading: write '## Tasks'"

_MARKDOWN = MarkdownIt("commonmark")


class Check(NamedTuple):
    """An entry requirement or exit criterion; `command` is None for prose."""

    text: str
    command: str | None
    line: int


class Setting(NamedTuple):
    """One `- key: value` item of a milestone's `## Agent` section, as written; typed and checked
    against the config in orchestrator_lib/milestone_agent.py."""

    key: str
    value: str
    line: int


class Milestone(NamedTuple):
    """One milestone file: its sections parsed, and the whole text for the prompt."""

    id: str
    stage: int
    task: str
    title: str
    path: Path
    description: str
    entry: tuple[Check, ...]
    tasks: str
    exit_criteria: tuple[Check, ...]
    dependencies: tuple[str, ...]
    estimate_minutes: int | None
    text: str
    agent: tuple[Setting, ...] = ()  # its `## Agent` section: merged over the config's agent


class Problem(NamedTuple):
    """What is wrong, where (line 0: the whole file), and how to fix it."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class Plan(NamedTuple):
    """The milestones in run order: by stage number, then task letter."""

    milestones: tuple[Milestone, ...]

    def stages(self) -> list[int]:
        return sorted({milestone.stage for milestone in self.milestones})

    def in_stage(self, stage: int) -> tuple[Milestone, ...]:
        return tuple(m for m in self.milestones if m.stage == stage)

    def get(self, milestone_id: str) -> Milestone | None:
        return next((m for m in self.milestones if m.id == milestone_id), None)


class _Issue(NamedTuple):
    """A problem inside one file, before the file's display path is known."""

    line: int
    message: str


class _Block(NamedTuple):
    """A level-1 or level-2 heading and the Markdown up to the next one."""

    level: int
    heading: str
    line: int
    body: str
    tokens: tuple[Token, ...]


class _Entry(NamedTuple):
    """One list item, or one line of a paragraph, as plain text."""

    line: int
    text: str


# ---------------------------------------------------------------- ids


def milestone_id_problem(text: str) -> str | None:
    """None if `text` is a milestone id such as 1A, else what is expected."""
    if _ID.fullmatch(text):
        return None
    message = f"'{text}' is not a milestone id (expected a stage number and a capital letter, e.g. 1A)"
    suggestion = _normalized_id(text)
    if suggestion is None or suggestion == text:
        return message
    return f"{message}: did you mean {suggestion}?"


def not_in_plan(plan: Plan, milestone_id: str, where: str = "the plan", hint: str = "") -> str:
    """The message for an id the plan does not hold, naming the ids it does."""
    have = ", ".join(m.id for m in plan.milestones)
    return f"no milestone {milestone_id} in {where}" + (f": {hint}" if hint else "") + f" (have: {have})"


def _normalized_id(text: str) -> str | None:
    """The id a loosely written one ("1a", "01A") stands for, if any."""
    match = _LOOSE_ID.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        return None
    return f"{int(match[1])}{match[2].upper()}"


def _id_order(milestone_id: str) -> tuple[int, str]:
    return int(milestone_id[:-1]), milestone_id[-1]


def _bad_name_problem(path: Path, display_path: str) -> Problem | None:
    if _FILE_NAME.fullmatch(path.name):
        return None
    message = (
        f"bad file name '{path.name}': expected a stage number without leading zeros and one capital letter, e.g. 1A.md"
    )
    suggestion = _normalized_id(path.stem)
    if suggestion and _has_sibling(path, f"{suggestion}.md"):
        message = f"'{path.name}' duplicates milestone {suggestion} ({suggestion}.md is there too): keep one of them"
    elif suggestion:
        message += f"; rename it to {suggestion}.md"
    return Problem(display_path, 0, message)


def _has_sibling(path: Path, name: str) -> bool:
    try:
        return any(p.name == name for p in path.parent.iterdir())
    except OSError:
        return False


# ---------------------------------------------------------------- one file


def parse_milestone(path: Path, text: str, display_path: str) -> tuple[Milestone | None, list[Problem]]:
    """Parse one milestone file; None only when its name is not a milestone id.

    The milestone is returned even when it has problems, so the checks across
    the plan (dependencies) still see it.
    """
    bad_name = _bad_name_problem(path, display_path)
    if bad_name:
        return None, [bad_name]
    milestone, issues = _parse(path, _normalized(text))
    problems = [Problem(display_path, issue.line, issue.message) for issue in issues]
    return milestone, sorted(problems, key=lambda problem: problem.line)


def _normalized(text: str) -> str:
    # Windows editors add a byte-order mark and CRLF; markdown-it would read a
    # BOM-prefixed "# Title" as a paragraph, and line numbers must stay right.
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _parse(path: Path, text: str) -> tuple[Milestone, list[_Issue]]:
    tokens = _MARKDOWN.parse(text)
    blocks = _blocks(tokens, text.split("\n"))
    title = next((block for block in blocks if block.level == 1), None)
    sections, issues = _sections(blocks)
    tasks = sections.get(_TASKS)
    dependencies, dependency_issues = _dependencies(sections.get(_DEPENDENCIES))
    estimate, estimate_issues = _estimate(sections.get(_ESTIMATE))
    agent, agent_issues = _agent_settings(sections.get(_AGENT))
    description = sections.get(_DESCRIPTION, title)
    milestone = Milestone(
        id=path.stem,
        stage=int(path.stem[:-1]),
        task=path.stem[-1],
        title=strip_line(title.heading).strip() if title else "",  # it reaches terminals: no escape codes
        path=path,
        description=description.body if description else "",
        entry=_checks(sections.get(_ENTRY)),
        tasks=tasks.body if tasks else "",
        exit_criteria=_checks(sections.get(_EXIT)),
        dependencies=tuple(entry.text for entry in dependencies),
        estimate_minutes=estimate,
        text=text,
        agent=agent,
    )
    issues += _title_issues(title) + _tasks_issues(tasks, tokens)
    return milestone, issues + dependency_issues + estimate_issues + agent_issues


def _blocks(tokens: Sequence[Token], lines: Sequence[str]) -> list[_Block]:
    # Only top-level headings split the file: a "#" inside a list or quote is content.
    starts = [i for i, token in enumerate(tokens) if _heading_level(token) in (1, 2)]
    ends = [*starts[1:], len(tokens)]
    return [_block(tokens, start, end, lines) for start, end in zip(starts, ends, strict=False)]


def _block(tokens: Sequence[Token], start: int, end: int, lines: Sequence[str]) -> _Block:
    body_start = _line_span(tokens[start])[1]
    body_end = _line_span(tokens[end])[0] if end < len(tokens) else len(lines)
    return _Block(
        level=_heading_level(tokens[start]),
        heading=_plain(tokens[start + 1]).strip(),
        line=_line_span(tokens[start])[0] + 1,
        body=_trimmed(lines[body_start:body_end]),
        # The block's content starts after heading_open, inline, heading_close.
        tokens=tuple(tokens[start + 3 : end]),
    )


def _heading_level(token: Token) -> int:
    if token.type != "heading_open" or token.level != 0:
        return 0
    return int(token.tag[1:])


def _line_span(token: Token) -> tuple[int, int]:
    """0-based [start, end) source lines; block tokens always carry a map."""
    return (token.map[0], token.map[1]) if token.map else (0, 0)


def _trimmed(lines: Sequence[str]) -> str:
    """The lines verbatim (indentation, fences) minus blank lines at either end."""
    kept = [i for i, line in enumerate(lines) if line.strip()]
    return "\n".join(lines[kept[0] : kept[-1] + 1]) if kept else ""


def _section_key(heading: str) -> str:
    return " ".join(heading.rstrip().rstrip(":").split()).casefold()


def _sections(blocks: Sequence[_Block]) -> tuple[dict[str, _Block], list[_Issue]]:
    sections: dict[str, _Block] = {}
    issues = []
    for block in (block for block in blocks if block.level == 2):
        key = _section_key(block.heading)
        first = sections.setdefault(key, block)
        if first is not block and key in _KNOWN_SECTIONS:
            issues.append(
                _Issue(
                    block.line,
                    f"second '## {block.heading}' section (the first is at line {first.line}): merge them into one",
                )
            )
    return sections, issues


def _title_issues(title: _Block | None) -> list[_Issue]:
    if title is None:
        return [_Issue(0, _NO_TITLE)]
    return [] if title.heading else [_Issue(title.line, _EMPTY_TITLE)]


def _tasks_issues(tasks: _Block | None, tokens: Sequence[Token]) -> list[_Issue]:
    if tasks is not None:
        return [] if tasks.body else [_Issue(tasks.line, _EMPTY_TASKS)]
    misplaced = _misplaced_heading(tokens, _TASKS)
    if misplaced is not None:
        return [_Issue(misplaced, _MISPLACED_TASKS)]
    return [_Issue(0, _NO_TASKS)]


def _misplaced_heading(tokens: Sequence[Token], key: str) -> int | None:
    """The line of a heading named `key` at a level other than 2, if any."""
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and _section_key(_plain(tokens[i + 1])) == key:
            return _line_span(token)[0] + 1
    return None


# ---------------------------------------------------------------- sections


def _plain_lines(inline: Token) -> list[str]:
    """The inline's text without markup, one string per source line."""
    lines = [""]
    for child in inline.children or ():
        if child.type in ("softbreak", "hardbreak"):
            lines.append("")
        elif child.type in ("text", "code_inline"):
            lines[-1] += child.content
    return lines


def _plain(inline: Token) -> str:
    return " ".join(_plain_lines(inline))


def _inlines(tokens: Sequence[Token]) -> Iterator[tuple[Token, bool]]:
    """Each list item's first paragraph (True) and each top-level paragraph (False).

    Later paragraphs of an item and quoted text are notes, not entries.
    """
    for i, token in enumerate(tokens):
        if token.type != "inline" or i < 1 or tokens[i - 1].type != "paragraph_open":
            continue
        if i >= 2 and tokens[i - 2].type == "list_item_open":
            yield token, True
        elif token.level == 1:
            yield token, False


def _entries(tokens: Sequence[Token]) -> Iterator[_Entry]:
    """List items whole; a plain paragraph line by line ("1A" and "2B" on two lines)."""
    for inline, is_item in _inlines(tokens):
        first = _line_span(inline)[0] + 1
        lines = _plain_lines(inline)
        if is_item:
            yield _Entry(first, " ".join(line.strip() for line in lines))
        else:
            yield from (_Entry(first + n, line.strip()) for n, line in enumerate(lines))


def _is_nothing(text: str) -> bool:
    return text.strip().rstrip(".").casefold() in _NOTHING


def _checks(section: _Block | None) -> tuple[Check, ...]:
    if section is None:
        return ()
    items = (inline for inline, is_item in _inlines(section.tokens) if is_item)
    checks = (_check(inline) for inline in items)
    return tuple(check for check in checks if not _is_nothing(check.text))


def _check(inline: Token) -> Check:
    children = inline.children or ()
    codes = (child.content for child in children if child.type == "code_inline")
    command = next(codes, "").strip() or None
    text = re.sub(r"\s*\n\s*", " ", inline.content).strip()
    return Check(text=text, command=command, line=_line_span(inline)[0] + 1)


def _dependencies(section: _Block | None) -> tuple[list[_Entry], list[_Issue]]:
    """Dependencies as entries of (line, id), first mention kept."""
    found: dict[str, _Entry] = {}
    issues = []
    for entry in _entries(section.tokens if section else ()):
        ids, issue = _dependency_ids(entry)
        issues += [issue] if issue else []
        for milestone_id in ids:
            found.setdefault(milestone_id, _Entry(entry.line, milestone_id))
    return list(found.values()), issues


def _dependency_ids(entry: _Entry) -> tuple[list[str], _Issue | None]:
    """The ids an entry starts with: "1A (greeting module)", "1A, 1B", "None"."""
    words = [word.strip("()[]{}.:!?\"'") for word in re.split(r"[\s,;]+", entry.text)]
    words = [word for word in words if word and word.casefold() not in ("and", "&")]
    if not words or _is_nothing(entry.text) or _is_nothing(words[0]):
        return [], None
    ids = list(itertools.takewhile(_ID.fullmatch, words))
    if not ids:
        return [], _Issue(entry.line, _dependency_message(entry.text, words[0]))
    return ids, None


def _dependency_message(text: str, first_word: str) -> str:
    if _LOOSE_ID.fullmatch(first_word):
        return f"dependency {milestone_id_problem(first_word)}"
    return (
        f"dependency '{text}' does not start with a milestone id: list one per line, "
        "e.g. '- 1A (greeting module)', or write None"
    )


def _estimate(section: _Block | None) -> tuple[int | None, list[_Issue]]:
    if section is None:
        return None, []
    entry = next((e for e in _entries(section.tokens) if e.text), None)
    if entry is None:
        message = f"the Estimated Time section is empty: write {_ESTIMATE_EXAMPLES}, or remove it"
        return None, [_Issue(section.line, message)]
    minutes = parse_estimate(entry.text)
    if minutes is None:
        message = f"cannot read the estimate '{entry.text}': write {_ESTIMATE_EXAMPLES}"
        return None, [_Issue(entry.line, message)]
    if minutes == 0:
        message = f"the estimate '{entry.text}' is zero: give the expected time"
        return None, [_Issue(entry.line, message)]
    return minutes, []


def _agent_settings(section: _Block | None) -> tuple[tuple[Setting, ...], list[_Issue]]:
    """`- key: value` items, as written (the raw source, so `*` or `_` in a value stay as they are)."""
    settings: dict[str, Setting] = {}
    issues = []
    for inline, is_item in _inlines(section.tokens if section else ()):
        line = _line_span(inline)[0] + 1
        match = _SETTING.fullmatch(" ".join(inline.content.split("\n")).strip())
        if not is_item or match is None:
            issues.append(_Issue(line, f"'{inline.content.strip()[:60]}' is not an agent setting: {_SETTING_EXAMPLE}"))
        elif match[1] in settings:
            first = settings[match[1]].line
            issues.append(_Issue(line, f"`{match[1]}` is set twice (first at line {first}): keep one"))
        else:
            settings[match[1]] = Setting(match[1], _unquoted(match[2].strip()), line)
    return tuple(settings.values()), issues


def _unquoted(value: str) -> str:
    """`claude-opus-4-5` in a code span is the text inside it."""
    return value[1:-1].strip() if len(value) > 1 and value[0] == value[-1] == "`" else value


def parse_estimate(text: str) -> int | None:
    """Minutes of work in `text`, or None if it is not a duration.

    "2 hours", "30 minutes", "45 min", "1.5h", "90m", "1h 30m", "1 day" (8 hours
    of work), "2-3 hours" and "30m-1h" (the upper bound), optionally after "~"
    or "about" and followed by a note in parentheses or after a dash.
    """
    text = _ESTIMATE_PREFIX.sub("", text, count=1)
    terms: list[re.Match[str]] = []
    while term := _ESTIMATE_TERM.match(text, terms[-1].end() if terms else 0):
        terms.append(term)
    if not terms:
        return None
    rest = text[terms[-1].end() :].strip()
    if rest and rest[0] not in _NOTE_STARTS:
        return None
    minutes = sum(_term_minutes(term) for term in terms)
    return round(minutes) if minutes <= _MAX_ESTIMATE_MINUTES else None  # also inf: "1e999 hours"


_MAX_ESTIMATE_MINUTES = 10 * 365 * 24 * 60  # beyond ten years it is a typo, not an estimate


def _term_minutes(term: re.Match[str]) -> float:
    unit = _UNIT_MINUTES[term["unit"][0].lower()]
    high = float(term["high"]) * unit
    if term["low"] is None:
        return high
    low_unit = _UNIT_MINUTES[term["low_unit"][0].lower()] if term["low_unit"] else unit
    return max(high, float(term["low"]) * low_unit)


# ---------------------------------------------------------------- the plan


def load_plan(directory: Path, root: Path) -> tuple[Plan, list[Problem]]:
    """Read every milestone file in `directory`; all problems, grouped by file.

    The plan holds every milestone that could be read, problems or not: run it
    only when the problem list is empty. Problem paths are shown relative to `root`.
    """
    paths, problems = _milestone_files(directory, _display(directory, root))
    milestones: list[Milestone] = []
    unreadable: set[str] = set()
    for path in paths:
        milestone, file_problems = _load_file(path, _display(path, root))
        problems += file_problems
        if milestone is not None:
            milestones.append(milestone)
        elif _FILE_NAME.fullmatch(path.name):
            unreadable.add(path.stem)
    plan = Plan(tuple(sorted(milestones, key=lambda m: _id_order(m.id))))
    problems += check_plan(plan.milestones, root, unreadable)
    return plan, sorted(problems, key=_problem_order)


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _milestone_files(directory: Path, shown: str) -> tuple[list[Path], list[Problem]]:
    if not directory.is_dir():
        return [], [_missing_directory(directory, shown)]
    try:
        paths = sorted(path for path in directory.iterdir() if _is_candidate(path))
    except OSError as error:
        return [], [Problem(shown, 0, f"cannot list the directory: {error.strerror}")]
    if not paths:
        message = f"no milestone files: add one per milestone, e.g. {shown}/1A.md"
        return [], [Problem(shown, 0, message)]
    return paths, []


def _missing_directory(directory: Path, shown: str) -> Problem:
    if directory.exists():
        message = "is not a directory: put one file per milestone in a directory"
        return Problem(shown, 0, message)
    message = f"directory not found: create it (mkdir {shown}) and add one file per milestone, e.g. {shown}/1A.md"
    return Problem(shown, 0, message)


def _is_candidate(path: Path) -> bool:
    # Hidden names are editor droppings (".#1A.md" locks), not milestones. A Markdown file whose
    # name starts with a digit is meant as one: a bad name there is a problem, not a warning.
    name = path.name
    return (
        path.suffix.lower() == ".md"
        and name[:1].isdigit()
        and not name.startswith(".")
        and name.lower() not in _IGNORED_FILES
        and path.is_file()
    )


def stray_entries(directory: Path, root: Path) -> list[Problem]:
    """What lies in the milestones folder but is not read as a milestone (warned about, not an error):
    a file the user meant as one would otherwise be skipped without a word."""
    try:
        entries = sorted(directory.iterdir()) if directory.is_dir() else []
    except OSError:
        return []
    strays = [p for p in entries if not p.name.startswith(".") and p.name.lower() not in _IGNORED_FILES]
    return [Problem(_display(p, root), 0, _stray_message(p)) for p in strays if not _is_candidate(p)]


def _stray_message(path: Path) -> str:
    if path.is_dir():
        named = " named like a milestone file" if _FILE_NAME.fullmatch(path.name) else ""
        return f"a folder{named}, not a milestone file: it is ignored (milestones are files such as 1A.md)"
    return "not a milestone file (those are named like 1A.md): it is ignored"


def _load_file(path: Path, shown: str) -> tuple[Milestone | None, list[Problem]]:
    bad_name = _bad_name_problem(path, shown)
    if bad_name:
        return None, [bad_name]
    try:
        raw = path.read_bytes()
    except OSError as error:
        return None, [Problem(shown, 0, f"cannot read the file: {error.strerror}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        message = f"not valid UTF-8 (byte 0x{raw[error.start]:02x}): save the file as UTF-8"
        return None, [Problem(shown, line, message)]
    return parse_milestone(path, text, shown)


def _problem_order(problem: Problem) -> tuple[int, int, str, str, int]:
    match = _FILE_NAME.fullmatch(PurePosixPath(problem.path).name)
    if match is None:
        return 1, 0, "", problem.path, problem.line
    stage, task = _id_order(match[1])
    return 0, stage, task, problem.path, problem.line


def check_plan(milestones: Sequence[Milestone], root: Path, unreadable: Collection[str] = ()) -> list[Problem]:
    """Problems across files: duplicate ids, bad dependencies, dependency cycles.

    `unreadable` are ids whose file exists but could not be read; depending on
    them is not reported again.
    """
    by_id: dict[str, Milestone] = {}
    problems = []
    for milestone in milestones:
        first = by_id.setdefault(milestone.id, milestone)
        if first is not milestone:
            other = _display(first.path, root)
            message = f"duplicate milestone id {milestone.id} (also {other})"
            problems.append(Problem(_display(milestone.path, root), 0, message))
    for milestone in by_id.values():
        problems += _dependency_problems(milestone, by_id, root, unreadable)
    return problems + _cycle_problems(by_id, root)


def _dependency_problems(
    milestone: Milestone,
    by_id: Mapping[str, Milestone],
    root: Path,
    unreadable: Collection[str],
) -> list[Problem]:
    shown = _display(milestone.path, root)
    problems = []
    for dependency in milestone.dependencies:
        target = by_id.get(dependency)
        if target is None and dependency in unreadable:
            continue
        message = _dependency_problem(milestone, dependency, target, shown)
        if message:
            line = _dependency_line(milestone, dependency)
            problems.append(Problem(shown, line, message))
    return problems


def _dependency_problem(milestone: Milestone, dependency: str, target: Milestone | None, shown: str) -> str | None:
    name = milestone.id
    if dependency == name:
        return f"{name} depends on itself: remove {name} from its Dependencies"
    if target is None:
        missing = PurePosixPath(shown).with_name(f"{dependency}.md")
        return f"{name} depends on {dependency}, which is not in the plan: add {missing} or remove the dependency"
    if target.stage == milestone.stage:
        return (
            f"{name} depends on {dependency} in the same stage; tasks of a stage run "
            f"in parallel: move {dependency} to an earlier stage"
        )
    if target.stage > milestone.stage:
        return (
            f"{name} depends on {dependency} in a later stage ({target.stage}); "
            f"stages run in order: move {dependency} to a stage before "
            f"{milestone.stage}"
        )
    return None


def _dependency_line(milestone: Milestone, dependency: str) -> int:
    # Milestone keeps ids only; the line is looked up again, and only for a problem.
    tokens = _MARKDOWN.parse(milestone.text)
    blocks = _blocks(tokens, milestone.text.split("\n"))
    entries, _ = _dependencies(_sections(blocks)[0].get(_DEPENDENCIES))
    return next((entry.line for entry in entries if entry.text == dependency), 0)


def _cycle_problems(by_id: Mapping[str, Milestone], root: Path) -> list[Problem]:
    graph = {name: [d for d in milestone.dependencies if d in by_id and d != name] for name, milestone in by_id.items()}
    problems = []
    for cycle in _cycles(graph):
        first = by_id[cycle[0]]
        loop = " -> ".join([*cycle, cycle[0]])
        message = f"dependency cycle {loop}: no order satisfies it; remove one of these"
        line = _dependency_line(first, cycle[1 % len(cycle)])
        problems.append(Problem(_display(first.path, root), line, message))
    return problems


def _cycles(graph: Mapping[str, Sequence[str]]) -> list[tuple[str, ...]]:
    """At least one cycle per tangle, each once, rotated to start at its first id."""
    found: dict[tuple[str, ...], None] = {}
    finished: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = trail[trail.index(node) :]
            start = cycle.index(min(cycle, key=_id_order))
            found[tuple(cycle[start:] + cycle[:start])] = None
        elif node not in finished:
            for dependency in graph[node]:
                visit(dependency, [*trail, node])
            finished.add(node)

    for node in sorted(graph, key=_id_order):
        visit(node, [])
    return list(found)

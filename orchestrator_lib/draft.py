"""`draft`: an agent turns a requirements document into milestone files, and the runner's own
validation closes the loop.

The agent works in a scratch worktree (detached, `<worktree_dir>/_draft`) and writes into that
worktree's milestones folder, the draft folder, empty at the start. After each of its turns the
draft is checked with exactly the checks of `--validate-only`, over the existing plan plus the
draft, and with the draft's own: an executable Exit Criterion and an Estimated Time in every
milestone, no empty stage. The problems go back verbatim to the same agent session, up to
`draft.max_rounds` turns. Only a valid plan reaches the project's milestones folder, and never
over an existing file; an invalid one is kept in `.orchestrator/draft/` with its problems.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from advanced import MilestoneValidator, RateLimitManager, SystemMonitor, WorktreeManager
from orchestrator_lib import agents, envfile, git, redact, render, safe_delete, survey
from orchestrator_lib.config import Config, config_path, load_config
from orchestrator_lib.errors import EXIT_FAILED, EXIT_OK, Interrupted, UsageError
from orchestrator_lib.lock import RunLock
from orchestrator_lib.pipeline import AgentSession, Held, Outcome, Paused, Progress, Services
from orchestrator_lib.plan import Milestone, Plan, Problem, load_plan
from orchestrator_lib.state import STATE_DIR, StateStore

ROLE = "draft"  # ORCHESTRATOR_ROLE of the drafting agent
DRAFT_ID = "draft"  # its ORCHESTRATOR_MILESTONE, and its log: logs/draft.log
SCRATCH = "_draft"  # the scratch worktree, under worktree_dir
KEPT = Path(STATE_DIR) / "draft"  # an invalid draft and its problems stay here
PROBLEMS_FILE = "problems.txt"
_ID_NAME = re.compile(r"([1-9][0-9]*)([A-Z])\.md")
_ANY_ID = re.compile(r"\b([1-9][0-9]*)([A-Z])\b")
_DEPENDENCIES = re.compile(r"(?ims)^##[ \t]*dependencies[ \t]*:?[ \t]*$(.*?)(?=^#{1,2}[ \t]|\Z)")
_ESTIMATE_HEADING = re.compile(r"(?im)^##[ \t]*estimated time[ \t]*:?[ \t]*$")
_EXIT_HEADING = re.compile(r"(?im)^##[ \t]*exit criteria[ \t]*:?[ \t]*$")


def format_reference() -> str:
    """docs/milestones.md, shipped inside the package so an installed orchestrator has it too."""
    return resources.files("orchestrator_lib").joinpath("milestones.md").read_text(encoding="utf-8")


class Round(NamedTuple):
    """One checked draft: its files (name -> text), the whole plan it makes, what is wrong."""

    files: dict[str, str]
    plan: Plan
    problems: tuple[str, ...]
    notes: tuple[str, ...]


class Request(NamedTuple):
    """The checked input of a draft: nothing is written before all of it is known to be good."""

    root: Path
    config: Config
    prd_path: Path
    prd: str
    existing: Plan
    append: bool


# ---------------------------------------------------------------- the command


def command(args: argparse.Namespace) -> int:
    request = _request(args)
    with RunLock(request.root / STATE_DIR):
        cfg = request.config
        git.exclude(request.root, [f"/{cfg.worktree_dir.strip('/')}/", f"/{STATE_DIR}/", f"/{_log_dir(cfg)}/"])
        return _Drafting(request).run()


def _request(args: argparse.Namespace) -> Request:
    root = git.find_root(Path(args.project or ".").resolve())
    explicit = bool(args.config or os.environ.get("ORCHESTRATOR_CONFIG"))
    config = load_config(config_path(root, args.config, os.environ), os.environ, explicit)
    prd_path, prd = read_requirements(Path(args.prd), root)
    missing = agents.check_installed(config.agent, root)
    if missing:
        raise UsageError(missing)
    existing = existing_plan(root, config.milestones_dir, args.append)
    if not git.has_commits(root):
        raise UsageError(f"{root} has no commits yet: make a first commit (the agent drafts in a worktree of it)")
    return Request(root, config, prd_path, prd, existing, args.append)


def read_requirements(given: Path, root: Path) -> tuple[Path, str]:
    """The document's text; a relative path is looked up in the current directory, then in the project."""
    path = given.expanduser().resolve()
    if not path.exists() and not given.is_absolute() and (root / given).exists():
        path = (root / given).resolve()  # `--project DIR draft PRD.md` from elsewhere
    if not path.exists():
        raise UsageError(f"no such requirements document: {path}")
    if not path.is_file():
        raise UsageError(f"{path} is not a file: give the requirements document, e.g. PRD.md")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text: save the requirements document as UTF-8") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    if not text.strip():
        raise UsageError(f"{path} is empty: write the requirements first")
    return path, text


def milestone_files(folder: Path) -> list[Path]:
    """The files the plan loader reads (README.md and hidden files aside)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() == ".md" and not p.name.startswith(".") and p.name.lower() != "readme.md" and p.is_file()
    )


def existing_plan(root: Path, milestones_dir: str, append: bool) -> Plan:
    """The plan the draft goes after; refuses existing files without --append, an invalid plan with it."""
    found = milestone_files(root / milestones_dir)
    if not found:
        return Plan(())
    names = ", ".join(p.name for p in found)
    if not append:
        raise UsageError(
            f"{milestones_dir}/ already holds milestone files ({names}); draft never overwrites them: "
            "add --append to plan new stages after them, or move them away"
        )
    plan, problems = load_plan(root / milestones_dir, root)
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise UsageError(f"the existing plan has {len(problems)} problem(s); fix them first:\n{listed}")
    return plan


def _log_dir(config: Config) -> str:
    return config.logging.log_dir.strip("/")


# ---------------------------------------------------------------- the rounds


class _Drafting:
    """One draft: the scratch worktree, the agent's turns and the checks between them."""

    def __init__(self, request: Request) -> None:
        self.r = request
        self.cfg = request.config
        self.scratch = request.root / self.cfg.worktree_dir / SCRATCH
        self.draft_dir = self.scratch / self.cfg.milestones_dir
        self.first_stage = max(request.existing.stages(), default=0) + 1
        self.stop = threading.Event()

    def run(self) -> int:
        self._make_scratch()
        try:
            with self._signals():
                return self._rounds()
        finally:
            self._remove_scratch()

    def _rounds(self) -> int:
        first = self._first_prompt()
        session = AgentSession(self._services(), _planner(first), self.scratch)
        message, rounds = first, self.cfg.draft.max_rounds
        checked = Round({}, Plan(()), (), ())
        for round_no in range(1, rounds + 1):
            what = "writes the plan" if round_no == 1 else f"fixes {len(checked.problems)} problem(s)"
            _say(f"draft round {round_no}/{rounds}: the {self.cfg.agent.preset} agent {what}")
            outcome = session.run(ROLE, message, resume=round_no > 1)
            if outcome.kind != "ok":
                return self._agent_failed(outcome)
            checked = check_draft(self.scratch, self.draft_dir, self.r.existing, self.first_stage)
            for note in checked.notes:
                _say(f"  {note}")
            if not checked.problems:
                return self._accept(checked, round_no)
            _say(f"  {len(checked.problems)} problem(s):\n" + "\n".join(f"    {p}" for p in checked.problems))
            message = self._feedback(checked, first, session.resumable)
        return self._give_up(checked, f"still invalid after {rounds} round(s) (draft.max_rounds)")

    def _make_scratch(self) -> None:
        self._remove_scratch()  # a killed draft's, if any
        git.add_detached_worktree(self.r.root, self.scratch, "HEAD")
        safe_delete.remove_tree(self.draft_dir, root=self.r.root, allowed_under=self.scratch)  # it starts empty
        self.draft_dir.mkdir(parents=True)
        (self.r.root / _log_dir(self.cfg)).mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM stop the agent's whole process group, then the draft ends (exit 130)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in handlers:
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _services(self) -> Services:
        root, cfg = self.r.root, self.cfg
        dotenv = envfile.read_dotenv(root)
        env = {**os.environ, **dotenv}
        redactor = redact.Redactor.from_environment(os.environ, dotenv)
        redact.install(redactor)  # the agent's log and prompt files are masked like a run's
        rate_limits = RateLimitManager(cfg, sleep=self.stop.wait)
        rate_limits.pause_until(*_persisted_pause(root))  # a run's usage-limit pause holds the draft too
        base = cfg.base_branch or git.current_branch(root) or "HEAD"
        return Services(
            config=cfg,
            root=root,
            rate_limits=rate_limits,
            monitor=SystemMonitor(cfg.monitor, root, sleep=self.stop.wait),
            validator=MilestoneValidator(cfg.validation, env, redactor),
            worktrees=WorktreeManager(root, root / cfg.worktree_dir, base, cfg.tasks_file),
            agent_env=env,
            log_dir=root / _log_dir(cfg),
            prompt_dir=root / STATE_DIR / "prompts",
            stop_for=lambda _id: self.stop,
            emit=_show_event,
            clock=time.time,
        )

    def _first_prompt(self) -> str:
        picture = survey.describe(survey.survey(self.r.root, self.cfg.validation.test_command))
        return first_prompt(self.r, picture, self.draft_dir, self.first_stage)

    def _feedback(self, checked: Round, first: str, resumable: bool) -> str:
        text = feedback(checked, self.scratch, self.draft_dir)
        if resumable:
            return text  # the same conversation: it already has the task
        return f"{first}\n\nYour previous draft is already in {self.draft_dir}.\n\n{text}"

    # ------------------------------------------------------------ endings

    def _accept(self, checked: Round, rounds: int) -> int:
        target = self.r.root / self.cfg.milestones_dir
        clashes = sorted(n for n in checked.files if (target / n).exists())
        if clashes or (not self.r.append and milestone_files(target)):
            self._keep(checked)
            taken = ", ".join(clashes or [p.name for p in milestone_files(target)])
            raise UsageError(
                f"{self.cfg.milestones_dir}/ now holds {taken}, written while the agent drafted; nothing was "
                f"overwritten. The valid draft is in {KEPT}/"
            )
        target.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(checked.files.items()):
            with open(target / name, "x", encoding="utf-8", newline="") as f:  # "x": never over a file
                f.write(text)
        self._forget_kept()  # an older failed draft is obsolete now
        _say(f"plan drafted in {rounds} round(s) and valid")
        _say("\n".join(plan_summary(checked.plan, checked.files, self.cfg)))
        _say("next: read them, then `./orchestrator.sh run` (or `python orchestrator.py plan` to see it again)")
        return EXIT_OK

    def _give_up(self, checked: Round, why: str) -> int:
        self._keep(checked)
        problems = "\n".join(f"  {p}" for p in checked.problems)
        _say(f"draft {why}; the draft and its problems are kept in {KEPT}/ ({PROBLEMS_FILE}):\n{problems}")
        _say(f"fix the files there and copy them into {self.cfg.milestones_dir}/, or run draft again")
        return EXIT_FAILED

    def _agent_failed(self, outcome: Outcome) -> int:
        found = collect_draft(self.scratch, self.draft_dir)[0]
        reason = f"the drafting agent stopped: {outcome.kind}: {outcome.message.strip()[-500:]}"
        if outcome.kind == "auth":
            reason += f"\nto fix: {agents.auth_hint(self.cfg.agent.preset)}"
        self._keep(Round(found, Plan(()), (reason,), ()))
        if outcome.kind == "interrupted":
            raise Interrupted(f"draft interrupted; what was written is kept in {KEPT}/")
        _say(f"{reason}\n(its log: {_log_dir(self.cfg)}/{DRAFT_ID}.log; what it wrote is kept in {KEPT}/)")
        return EXIT_FAILED

    def _remove_scratch(self) -> None:
        if self.scratch.exists():
            safe_delete.force_remove_worktree(self.r.root, self.scratch, allowed_under=self.scratch.parent)
        git.prune_worktrees(self.r.root)

    def _forget_kept(self) -> None:
        safe_delete.remove_tree(self.r.root / KEPT, root=self.r.root, allowed_under=self.r.root / STATE_DIR)

    def _keep(self, checked: Round) -> None:
        kept = self.r.root / KEPT
        self._forget_kept()
        kept.mkdir(parents=True)
        for name, text in checked.files.items():
            (kept / name).write_text(text, encoding="utf-8", newline="")
        (kept / PROBLEMS_FILE).write_text("".join(f"{p}\n" for p in checked.problems), encoding="utf-8")


def _planner(prompt: str) -> Milestone:
    """The drafting agent's stand-in milestone: its id names the log and the agent's environment."""
    return Milestone(DRAFT_ID, 0, "", "draft the plan", Path(), "", (), "", (), (), None, prompt)


def _persisted_pause(root: Path) -> tuple[float, str]:
    store = StateStore.open(root, readonly=True)
    if store is None:
        return 0.0, ""
    try:
        run = store.run()
        return run.paused_until, run.pause_reason
    finally:
        store.close()


def _show_event(event: object) -> None:
    """What the drafting agent does, for the person waiting: its latest line (at most one a
    second), usage-limit pauses and resource holds."""
    if isinstance(event, Progress) and event.changes.get("last_line"):
        _say(f"  draft: {event.changes['last_line']}")
    elif isinstance(event, Paused):
        until = time.strftime("%H:%M:%S", time.localtime(event.until))
        _say(f"usage limit: {event.reason} · the draft waits until {until}")
    elif isinstance(event, Held) and event.reason:
        _say(f"holding the agent's start: {event.reason}")


def _say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- checking a draft


def check_draft(scratch: Path, draft_dir: Path, existing: Plan, first_stage: int) -> Round:
    """The draft as the runner would see it next to the existing plan, and every problem in it."""
    files, notes = collect_draft(scratch, draft_dir)
    renamed = renumber(files, first_stage)
    if renamed:
        files = _write_renumbered(draft_dir, files, renamed)
        notes.append("numbered after the existing stages: " + ", ".join(f"{a} -> {b}" for a, b in renamed.items()))
    shown = draft_dir.relative_to(scratch).as_posix()
    if not any(_ID_NAME.fullmatch(n) for n in files):
        message = f"no milestone files: write one file per milestone, e.g. {shown}/{first_stage}A.md"
        return Round(files, Plan(()), (f"{shown}: {message}",), tuple(notes))
    plan, problems = _validate_together(existing, files, shown)
    problems += draft_problems(plan, set(files), first_stage, shown)
    return Round(files, plan, tuple(map(str, problems)), tuple(notes))


def collect_draft(scratch: Path, draft_dir: Path) -> tuple[dict[str, str], list[str]]:
    """The draft folder's files; milestone files the agent wrote elsewhere in the worktree move in."""
    notes = []
    for stray in _strays(scratch, draft_dir):
        target = draft_dir / stray.name
        if not target.exists():
            shutil.move(stray, target)
            notes.append(f"moved {stray.relative_to(scratch).as_posix()} into the draft folder")
    files = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in milestone_files(draft_dir)}
    return files, notes


def _strays(scratch: Path, draft_dir: Path) -> list[Path]:
    paths = (scratch / p for p in git.untracked_files(scratch))  # ignored too: `.orchestrator/draft/1A.md`
    return [
        p
        for p in paths
        if _ID_NAME.fullmatch(p.name) and p.is_file() and not p.resolve().is_relative_to(draft_dir.resolve())
    ]


def renumber(files: Mapping[str, str], first_stage: int) -> dict[str, str]:
    """Old id -> new id when the draft's stages start before `first_stage` (the existing plan's)."""
    ids = [m.group(1) + m.group(2) for n in files if (m := _ID_NAME.fullmatch(n))]
    low = min((int(i[:-1]) for i in ids), default=first_stage)
    if low >= first_stage:
        return {}
    shift = first_stage - low
    return {i: f"{int(i[:-1]) + shift}{i[-1]}" for i in sorted(ids, key=lambda i: (int(i[:-1]), i[-1]))}


def _write_renumbered(draft_dir: Path, files: Mapping[str, str], renamed: Mapping[str, str]) -> dict[str, str]:
    """Rename the draft's files and the dependencies among them, in the draft folder itself."""
    out: dict[str, str] = {}
    for name, text in files.items():
        old = name[:-3]
        new_name = f"{renamed[old]}.md" if old in renamed else name
        out[new_name] = rename_dependencies(text, renamed)
        (draft_dir / name).unlink()
    for name, text in out.items():
        (draft_dir / name).write_text(text, encoding="utf-8", newline="")
    return out


def rename_dependencies(text: str, renamed: Mapping[str, str]) -> str:
    def section(match: re.Match[str]) -> str:
        body = _ANY_ID.sub(lambda m: renamed.get(m.group(0), m.group(0)), match.group(1))
        return match.group(0)[: match.start(1) - match.start(0)] + body

    return _DEPENDENCIES.sub(section, text)


def _validate_together(existing: Plan, files: Mapping[str, str], shown: str) -> tuple[Plan, list[Problem]]:
    """Exactly --validate-only's checks, on the existing plan and the draft in one folder."""
    with tempfile.TemporaryDirectory(prefix="orchestrator-draft-") as tmp:
        folder = Path(tmp) / shown
        folder.mkdir(parents=True)
        for m in existing.milestones:
            (folder / m.path.name).write_text(m.text, encoding="utf-8")
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8", newline="")
        return load_plan(folder, Path(tmp))


def draft_problems(plan: Plan, names: set[str], first_stage: int, shown: str) -> list[Problem]:
    """What a drafted plan needs beyond --validate-only: something that checks the work, an
    estimate, and stages without gaps."""
    drafted = [m for m in plan.milestones if f"{m.id}.md" in names]
    problems = []
    for m in drafted:
        where = f"{shown}/{m.id}.md"
        if not any(check.command for check in m.exit_criteria):
            problems.append(Problem(where, _line_of(_EXIT_HEADING, m.text), _NO_CHECK.format(id=m.id)))
        if m.estimate_minutes is None and not _ESTIMATE_HEADING.search(m.text):
            problems.append(Problem(where, 0, _NO_ESTIMATE))
    stages = {m.stage for m in drafted}
    for stage in range(first_stage, max(stages, default=0)):
        if stage not in stages:
            message = f"stage {stage} is empty: number the stages from {first_stage} without gaps"
            problems.append(Problem(shown, 0, message))
    return problems


_NO_CHECK = (
    "{id} has no executable Exit Criterion: add a list item whose code span is a shell command that exits 0 "
    "only when the work is done, e.g. '- The tests pass (`python -m pytest -q`)'"
)
_NO_ESTIMATE = "no '## Estimated Time' section: add one with the expected time, e.g. '2 hours'"


def _line_of(heading: re.Pattern[str], text: str) -> int:
    match = heading.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else 0


# ---------------------------------------------------------------- prompts


def first_prompt(r: Request, picture: str, draft_dir: Path, first_stage: int) -> str:
    parts = [
        "You are planning the work on this repository for Claude Code Orchestrator, which gives each "
        "milestone to a coding agent in its own git worktree, checks it, has it reviewed and merges it.",
        f"Turn the requirements document below into milestone files. Write each milestone as its own file "
        f"in {draft_dir} named by its id (e.g. {draft_dir / f'{first_stage}A.md'}), exactly in the format "
        "of the reference below.",
        "",
        "Rules:",
        f"- Write only milestone files, only in {draft_dir}. Change nothing else; do not commit.",
        "- Every milestone has a title, Tasks, Exit Criteria with at least one shell check in a code span "
        "that proves the work, Dependencies (or None) and an Estimated Time.",
        f"- Number the stages from {first_stage} without gaps. Milestones of one stage run in parallel: they "
        "must not depend on each other nor change the same files.",
        "- When the files are written, stop. The orchestrator validates them and tells you about any problem.",
    ]
    if r.existing.milestones:
        listed = "\n".join(f"  - {m.id}: {m.title}" for m in r.existing.milestones)
        parts += [
            "",
            f"The project already has these milestones (stages 1-{first_stage - 1}); keep them as they are "
            f"and plan only what comes after them. Your milestones may depend on them:\n{listed}",
        ]
    parts += [
        "",
        "===== The repository =====",
        picture,
        "",
        "===== The milestone format reference =====",
        format_reference().strip(),
        "",
        f"===== The requirements document ({r.prd_path.name}) =====",
        r.prd.strip(),
        "",
    ]
    return "\n".join(parts)


def feedback(checked: Round, scratch: Path, draft_dir: Path) -> str:
    """The problems, verbatim, for the agent that wrote the draft."""
    lines = [
        f"The orchestrator checked your milestone files in {draft_dir} and found these problems "
        f"(paths are relative to {scratch}):",
        *(f"- {p}" for p in checked.problems),
    ]
    if checked.notes:
        lines += ["", "Note: " + "; ".join(checked.notes) + "."]
    lines += ["", f"Fix every one of them by editing the files in {draft_dir}, then stop."]
    return "\n".join(lines)


# ---------------------------------------------------------------- the plan, for people


def plan_summary(plan: Plan, names: Mapping[str, str], config: Config) -> list[str]:
    """Waves (stages), the critical path by Estimated Time, and the agent runs the plan implies."""
    drafted = [m for m in plan.milestones if f"{m.id}.md" in names]
    stages = sorted({m.stage for m in drafted})
    lines = [
        f"{len(drafted)} milestone(s) in {len(stages)} wave(s) (a wave is a stage; its milestones run in parallel):"
    ]
    for stage in stages:
        wave = [m for m in drafted if m.stage == stage]
        lines.append(
            f"  wave {stage}: " + " · ".join(f"{m.id} {m.title} ~{_duration(m.estimate_minutes)}" for m in wave)
        )
    path = [max((m for m in drafted if m.stage == s), key=lambda m: m.estimate_minutes or 0) for s in stages]
    total = sum(m.estimate_minutes or 0 for m in path)
    chain = " -> ".join(f"{m.id} ({_duration(m.estimate_minutes)})" for m in path)
    lines.append(f"critical path by Estimated Time: {chain} = {_duration(total)}")
    lines.append(agent_runs(len(drafted), config))
    lines.append("written: " + ", ".join(f"{config.milestones_dir}/{n}" for n in sorted(names, key=_name_order)))
    return lines


def agent_runs(milestones: int, config: Config) -> str:
    """One implementation (and one review) per milestone; more when checks or reviews ask for fixes."""
    review = config.review
    each = 2 if review.enabled else 1
    most = milestones * review.max_rounds * each
    what = "an implementation and a review" if review.enabled else "an implementation"
    return (
        f"agent runs: {milestones * each} ({what} for each milestone); up to {most} if every round asks "
        f"for fixes (review.max_rounds {review.max_rounds})"
    )


def _duration(minutes: int | None) -> str:
    if not minutes:
        return "?"
    return render.format_minutes(minutes)


def _name_order(name: str) -> tuple[int, str]:
    match = _ID_NAME.fullmatch(name)
    return (int(match.group(1)), match.group(2)) if match else (0, name)

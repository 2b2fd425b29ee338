"""What is checked before the runner writes anything (state, .git/info/exclude, logs, TASKS.md).

A bad input found after the first write leaves files behind, or worse, worktrees of agents that
already ran; found here it is exit 2 with nothing touched. `--validate-only` reports the same
problems, all at once, that `run` refuses to start with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from orchestrator_lib import conflicts, envfile, git, pathkeys
from orchestrator_lib.config import Config
from orchestrator_lib.errors import OrchestratorError, UsageError
from orchestrator_lib.plan import Milestone, Plan, milestone_id_problem, not_in_plan
from orchestrator_lib.state import STATE_DIR, StateStore

T = TypeVar("T")


class Output(NamedTuple):
    """A place the runner writes: a folder or a file, shown to the user as `name`."""

    path: Path
    folder: bool
    name: str


def problems(
    root: Path, config: Config | None, plan: Plan, stage: int | None = None, milestone: str | None = None
) -> list[str]:
    """Everything besides the config file and the plan that would stop a run, all at once.

    `config` is None when the config file itself has problems: what depends on it is not checked."""
    found: list[str] = []
    _collect(found, lambda: envfile.read_dotenv(root))
    base = _collect(found, lambda: base_branch(root, config or Config()))
    if config is not None:
        found += output_problems(root, config) + tracked_problems(root, config)
    if config is not None and config.schedule == "dependencies":
        found += [p for p in [conflicts.git_problem(git.version(root))] if p]
    found += state_problems(root)
    if stage is not None or milestone is not None:
        # without a base branch, what is merged is unknown: check the ids and stages alone
        merged = list(git.milestone_trailers(root, f"refs/heads/{base}")) if base else [m.id for m in plan.milestones]
        shown = config.milestones_dir if config else Config().milestones_dir
        schedule = config.schedule if config else "stages"
        _collect(found, lambda: selection(plan, merged, stage, milestone, shown, schedule))
    return found


def _collect(found: list[str], check: Callable[[], T]) -> T | None:
    try:
        return check()
    except UsageError as e:
        found.append(str(e))
        return None


# ---------------------------------------------------------------- where the runner writes


def outputs(root: Path, config: Config) -> list[Output]:
    state, logs = root / STATE_DIR, root / config.logging.log_dir
    return [
        Output(state, True, f"{STATE_DIR}/ (the runner's state)"),
        Output(state / "state.db", False, f"{STATE_DIR}/state.db"),
        Output(state / "lock", False, f"{STATE_DIR}/lock"),
        Output(state / "control", True, f"{STATE_DIR}/control"),
        Output(state / "prompts", True, f"{STATE_DIR}/prompts"),
        Output(logs, True, f"{config.logging.log_dir} (`logging.log_dir`)"),
        Output(logs / "metrics.json", False, f"{config.logging.log_dir}/metrics.json"),
        Output(root / config.worktree_dir, True, f"{config.worktree_dir} (`worktree_dir`)"),
        Output(root / config.tasks_file, False, f"{config.tasks_file} (`tasks_file`)"),
    ]


def output_problems(root: Path, config: Config) -> list[str]:
    """Every output of the wrong kind (a folder where a file goes, or the reverse) or not writable."""
    problems = [
        f"`{key}` {problem}"
        for key, value in pathkeys.path_keys(config)
        if (problem := pathkeys.location_problem(root, value))
    ]
    if problems:
        return problems
    places = [*outputs(root, config), *_git_outputs(root)]
    return list(dict.fromkeys(p for out in places if (p := _output_problem(root, out))))


def tracked_problems(root: Path, config: Config) -> list[str]:
    """The worktree folder is the runner's own (it is excluded from git, and emptied): none of the user's files."""
    out = git.git(root, "ls-files", "-z", "--", config.worktree_dir, check=False)
    tracked = [p for p in out.stdout.split("\0") if p]
    if out.returncode or not tracked:
        return []
    return [
        f"`worktree_dir` {config.worktree_dir} holds files of yours tracked by git ({', '.join(tracked[:3])}"
        f"{' …' if len(tracked) > 3 else ''}): set worktree_dir to a folder of the runner's own, e.g. .worktree"
    ]


def _git_outputs(root: Path) -> list[Output]:
    out = git.git(root, "rev-parse", "--git-common-dir", check=False)
    common = (root / out.stdout.strip()).resolve() if out.returncode == 0 else root / ".git"
    return [
        Output(common, True, f"{common} (git's own folder)"),
        Output(common / "info" / "exclude", False, f"{common / 'info' / 'exclude'} (git's exclude list)"),
    ]


def _output_problem(root: Path, out: Output) -> str | None:
    for parent in reversed(out.path.parents):
        if parent.is_relative_to(root) and parent.exists() and not parent.is_dir():
            return f"{_shown(parent, root)} is a file, but {out.name} needs a folder there: move the file away"
    if out.path.exists() or out.path.is_symlink():
        if out.folder and not out.path.is_dir():
            return f"{out.name} is a file, but the runner needs a folder there: move it away, or pick another path"
        if not out.folder and out.path.is_dir():
            return f"{out.name} is a folder, but the runner writes a file there: move it away, or pick another path"
        if not os.access(out.path, os.W_OK | (os.X_OK if out.folder else 0)):
            return f"{out.name} is not writable{_read_only_hint(out)}: make it writable (chmod u+w)"
        if out.folder:
            return None
    # a file is replaced atomically (a temp file beside it), so its folder must be writable too
    writable_parent = next(p for p in (out.path.parent, *out.path.parent.parents) if p.exists())
    if not os.access(writable_parent, os.W_OK | os.X_OK):
        return (
            f"cannot write {out.name}: the folder {writable_parent} is not writable (chmod u+w, or another --project)"
        )
    return None


def _read_only_hint(out: Output) -> str:
    return " (the state database is read-only)" if out.path.name == "state.db" else ""


def _shown(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


# ---------------------------------------------------------------- state, base branch


def state_problems(root: Path) -> list[str]:
    """A state whose records have the wrong shape, found now rather than after the first write."""
    path = root / STATE_DIR / "state.db"
    if not path.is_file():
        return []
    try:
        StateStore.check(root)
    except OrchestratorError as e:
        return [str(e)]
    return []


def base_branch(root: Path, config: Config) -> str:
    """The branch stages merge into: it must be a valid branch name, exist and hold a commit."""
    name = config.base_branch
    if name is None:
        name = git.current_branch(root)
        if not name:
            raise UsageError("HEAD is detached: check out a branch, or set base_branch in the config")
        if not git.has_commits(root):
            raise UsageError(f"{root} has no commits yet: make a first commit, then run again")
        return name
    valid = name.strip() == name and not name.startswith("-") and name != ""
    if not valid or git.git(root, "check-ref-format", "--branch", name, check=False).returncode:
        raise UsageError(f"config `base_branch` {name!r} is not a valid branch name: name an existing branch")
    if not git.branch_exists(root, name):
        have = ", ".join(git.branches(root, "*")[:10]) or "none yet"
        raise UsageError(f"config `base_branch` {name!r}: no such branch in {root} (branches: {have})")
    return name


# ---------------------------------------------------------------- what to run


def selection(
    plan: Plan,
    merged: Sequence[str],
    stage: int | None,
    milestone: str | None,
    shown_dir: str,
    schedule: str = "stages",
) -> list[tuple[int, list[Milestone]]]:
    """The stages and milestones `--stage`/`--milestone` pick among those not merged; UsageError if none fits.

    Stages mode needs the earlier stages merged; dependencies mode only the picked milestones' Dependencies."""
    pending = [m for m in plan.milestones if m.id not in merged]
    if milestone is not None:
        return _one_milestone(plan, merged, pending, milestone, shown_dir, schedule)
    stages = sorted({m.stage for m in pending})
    if stage is not None:
        if stage not in plan.stages():
            have = ", ".join(map(str, plan.stages())) or "none"
            raise UsageError(f"--stage {stage}: there is no stage {stage} (stages: {have})")
        if schedule == "dependencies":
            _require_dependencies_merged([m for m in pending if m.stage == stage], merged, f"stage {stage}")
        else:
            _require_earlier_merged(stage, pending, f"stage {stage}")
        stages = [s for s in stages if s == stage]
    return [(s, [m for m in pending if m.stage == s]) for s in stages]


def _one_milestone(
    plan: Plan, merged: Sequence[str], pending: list[Milestone], wanted: str, shown_dir: str, schedule: str
) -> list[tuple[int, list[Milestone]]]:
    problem = milestone_id_problem(wanted)
    if problem:
        raise UsageError(f"--milestone: {problem}")
    m = plan.get(wanted)
    if m is None:
        raise UsageError(not_in_plan(plan, wanted, where=f"{shown_dir}/"))
    if schedule != "dependencies":
        _require_earlier_merged(m.stage, pending, f"milestone {m.id}")
    missing = [d for d in m.dependencies if d not in merged]
    if missing:
        raise UsageError(f"milestone {m.id} depends on {', '.join(missing)}, not merged yet")
    return [] if m.id in merged else [(m.stage, [m])]


def _require_dependencies_merged(milestones: list[Milestone], merged: Sequence[str], what: str) -> None:
    missing = sorted({d for m in milestones for d in m.dependencies if d not in merged})
    if missing:
        raise UsageError(
            f"{what} depends on {', '.join(missing)}, not merged yet (run without --stage, "
            f"or `--milestone {missing[0]}` first)"
        )


def _require_earlier_merged(stage: int, pending: list[Milestone], what: str) -> None:
    earlier = [m.id for m in pending if m.stage < stage]
    if earlier:
        first = min(m.stage for m in pending)
        raise UsageError(
            f"{what} needs the earlier stages merged first; not merged: {', '.join(earlier)} "
            f"(run `--stage {first}` or run without --stage)"
        )

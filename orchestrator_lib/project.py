"""A project as a run sees it: its root, its config and its plan, read once, and what stops a run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib import agents, executor, git, milestone_agent, preflight, tasksfile, worktree_prep
from orchestrator_lib import config as configuration
from orchestrator_lib.errors import UsageError
from orchestrator_lib.plan import Plan, load_plan, stray_entries


class Project(NamedTuple):
    root: Path
    config: configuration.Config
    plan: Plan
    problems: tuple[object, ...]
    config_ok: bool = True  # False: the config had problems (listed in `problems`); defaults stand in
    config_file: Path = Path(configuration.CONFIG_FILE)


def load_project(args: argparse.Namespace, keep_config_error: bool = False) -> Project:
    """Config and plan, read once. With keep_config_error, each config problem becomes one more problem
    (and the plan is read with defaults), so --validate-only and run can report everything at once."""
    root = git.find_root(Path(args.project or ".").resolve())
    path = configuration.config_path(root, args.config, os.environ)
    explicit = bool(args.config or os.environ.get("ORCHESTRATOR_CONFIG"))
    config_problems: list[object] = []
    try:
        config = configuration.load_config(path, os.environ, explicit=explicit)
    except UsageError as e:
        if not keep_config_error:
            raise
        config, config_problems = configuration.Config(), list(getattr(e, "problems", [e]))
    if getattr(args, "schedule", None):  # the flag wins over the file
        config = configuration.replace(config, schedule=args.schedule)
    plan, problems = load_plan(root / config.milestones_dir, root)
    problems += milestone_agent.plan_problems(plan, config, root, str(path))
    base = config.base_branch or git.current_branch(root)
    theirs = tasksfile.ownership_problem(root, config.tasks_file, base)  # never overwrite the user's file
    return Project(
        root, config, plan, (*config_problems, *problems, *([theirs] if theirs else [])), not config_problems, path
    )


def check_project(project: Project, args: argparse.Namespace) -> list[object]:
    """Every problem that stops a run, found before anything is written; warnings are printed."""
    for warning in stray_entries(project.root / project.config.milestones_dir, project.root):
        print(f"warning: {warning}", file=sys.stderr)
    for note in _scrub_warnings(project) if project.config_ok else ():  # a broken config's stand-in agent is no one's
        print(f"warning: {note}", file=sys.stderr)
    config = project.config if project.config_ok else None
    stage, milestone = getattr(args, "stage", None), getattr(args, "milestone", None)
    prepared = worktree_prep.problems(project.root, config.worktree, project.config_file) if config else []
    found = preflight.problems(project.root, config, project.plan, stage, milestone)
    return [*project.problems, *prepared, *found, *executor.problems(config, project.root)]


def _agents_used(project: Project) -> list[configuration.AgentConfig]:
    """The config's agents and every milestone's own (its `## Agent` section), each once."""
    used = [project.config.agent, project.config.review.agent]
    used += [milestone_agent.for_role(project.config, m, "implement") for m in project.plan.milestones]
    once: list[configuration.AgentConfig] = []  # not a set: an agent's env mapping is not hashable
    once += [a for i, a in enumerate(used) if a is not None and a not in used[:i]]
    return once


def _scrub_warnings(project: Project) -> list[str]:
    installed = [a for a in _agents_used(project) if agents.check_installed(a, project.root) is None]
    found = (agents.scrub_warning(a, os.environ.get("PATH")) for a in installed)  # a missing CLI is its own error
    return list(dict.fromkeys(w for w in found if w))


def agent_not_installed(project: Project) -> str | None:
    """How to install the first agent CLI the run needs that cannot be started, or None."""
    return next(filter(None, (agents.check_installed(a, project.root) for a in _agents_used(project))), None)

"""`new`: a milestone file from the template, with every section, for plans written by hand."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from orchestrator_lib import git, survey
from orchestrator_lib.config import config_path, load_config
from orchestrator_lib.errors import EXIT_OK, UsageError
from orchestrator_lib.plan import load_plan, milestone_id_problem

TEMPLATE = """\
# {title}

## Description
What this milestone builds and why, in a few sentences.

## Entry Requirements
None

## Tasks
- The work, as a list. Name each file it creates or changes in a code span: that sets the scope.

## Exit Criteria
- The tests pass (`{test_command}`)

## Dependencies
{dependencies}

## Estimated Time
1 hour
"""


def command(args: argparse.Namespace) -> int:
    root = git.find_root(Path(args.project or ".").resolve())
    explicit = bool(args.config or os.environ.get("ORCHESTRATOR_CONFIG"))
    config = load_config(config_path(root, args.config, os.environ), os.environ, explicit)
    milestone_id, title = args.id, " ".join(args.title.split())
    deps = parse_deps(args.deps or "", milestone_id)
    if not title:
        raise UsageError('the title is empty: give one, e.g. new 2C "Command-line report"')
    folder = root / config.milestones_dir
    path = folder / f"{milestone_id}.md"
    if path.exists():
        raise UsageError(f"{config.milestones_dir}/{path.name} already exists: pick another id, or edit that file")
    unknown = _unknown(folder, root, deps)
    test_command = config.validation.test_command or survey.test_command(root) or "python -m pytest -q"
    text = render(title, deps, test_command)
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:  # "x": a file made meanwhile is not overwritten
        f.write(text)
    print(f"wrote {config.milestones_dir}/{path.name}: fill in its sections, then check the plan with --validate-only")
    if unknown:
        print(f"note: {', '.join(unknown)} not in the plan yet: write them before running")
    return EXIT_OK


def parse_deps(text: str, milestone_id: str) -> tuple[str, ...]:
    """The --deps ids (1A,1B) after the milestone's own id is checked; each must be of an earlier stage."""
    problem = milestone_id_problem(milestone_id)
    if problem:
        raise UsageError(problem)
    deps = tuple(dict.fromkeys(d.strip() for d in text.replace(" ", ",").split(",") if d.strip()))
    bad = [p for p in map(milestone_id_problem, deps) if p]
    if bad:
        raise UsageError(f"--deps: {'; '.join(bad)}")
    stage = int(milestone_id[:-1])
    late = [d for d in deps if int(d[:-1]) >= stage]
    if late:
        raise UsageError(
            f"--deps: {', '.join(late)} must be of a stage before {stage}: milestones of one stage run in "
            "parallel and stages run in order"
        )
    return deps


def render(title: str, deps: tuple[str, ...], test_command: str) -> str:
    dependencies = "\n".join(f"- {d}" for d in deps) or "None"
    return TEMPLATE.format(title=title, dependencies=dependencies, test_command=test_command)


def _unknown(folder: Path, root: Path, deps: tuple[str, ...]) -> list[str]:
    if not deps:
        return []
    plan, _ = load_plan(folder, root)
    return [d for d in deps if plan.get(d) is None]

"""The command line: verbs, options and help text. orchestrator.main() parses with it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator_lib import __version__

EXIT_CODES = """\
exit codes:
  0    done (or nothing left to do)
  1    a milestone failed or was blocked; state is saved, running again resumes
  2    usage or configuration error (nothing was started)
  3    internal error (traceback in the run log)
  130  interrupted (Ctrl-C / SIGTERM / stop); continue with --resume
"""
COMMANDS = ("draft", "new", "run", "status", "clean", "demo", "validate", "plan", "logs", "stop", "watch", "serve")


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Run a plan of milestone files (milestones/1A.md, 1B.md, 2A.md …) with coding agents: "
        "each stage's tasks in parallel worktrees, reviewed, then merged into your branch. "
        "Without a command, `run` is assumed.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_run_options(parser.add_argument_group("run options (the default command)"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_options(
        sub.add_parser(
            "run",
            parents=[common],
            help="run the remaining stages (default)",
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    _add_plan_writers(sub, common)
    _add_housekeeping(sub, common)
    _add_views(sub, common)
    return parser


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after its verb."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--project",
        metavar="DIR",
        help="the git repository to work on (default: the one containing the current directory)",
    )
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $ORCHESTRATOR_CONFIG, else orchestrator.config.json at the project root)",
    )
    common.add_argument(
        "--no-color", action="store_true", help="no colour (also when NO_COLOR is set or output is not a terminal)"
    )
    return common


def _add_housekeeping(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser("status", parents=[common], help="show where every milestone stands")
    status.add_argument("--json", action="store_true", help="print a JSON object (keys documented in the README)")
    clean = sub.add_parser(
        "clean",
        parents=[common],
        help="remove the merged worktrees and branches the runner made (recorded in .orchestrator/); "
        "any other branch is kept",
    )
    clean.add_argument(
        "--force", action="store_true", help="also drop the runner's worktrees and branches holding unmerged work"
    )
    clean.add_argument("--dry-run", action="store_true", help="list what would be removed and kept; change nothing")
    clean.add_argument(
        "--state", action="store_true", help="also forget the runner's state (.orchestrator/); git keeps what is merged"
    )
    demo = sub.add_parser("demo", parents=[common], help="run the example plan offline in a scratch repository")
    demo.add_argument(
        "--dir", metavar="DIR", help="where to create the scratch repository (default: a new temp folder)"
    )
    validate = sub.add_parser(
        "validate", parents=[common], help="check the plan and config, run nothing (same as --validate-only)"
    )
    validate.add_argument(
        "--schedule", choices=("stages", "dependencies"), help="check the plan as this schedule would run it"
    )


def _add_views(sub: Any, common: argparse.ArgumentParser) -> None:
    plan = sub.add_parser(
        "plan", parents=[common], help="show the execution plan, or the exact prompt of one milestone"
    )
    plan.add_argument("milestone", nargs="?", metavar="ID")
    plan.add_argument(
        "--schedule", choices=("stages", "dependencies"), help="show the plan as this schedule would run it"
    )
    logs = sub.add_parser("logs", parents=[common], help="print a milestone's agent log as a readable transcript")
    logs.add_argument("milestone", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as the agent writes")
    logs.add_argument("--raw", action="store_true", help="print the raw log")
    stop = sub.add_parser("stop", parents=[common], help="stop the running run, or one milestone's agent")
    stop.add_argument("milestone", nargs="?", metavar="ID")
    watch = sub.add_parser("watch", parents=[common], help="live dashboard of a run")
    watch.add_argument("--refresh", type=float, default=2.0, metavar="N", help="seconds between refreshes (default 2)")
    watch.add_argument("--once", action="store_true", help="draw one frame and exit")
    serve = sub.add_parser("serve", parents=[common], help="read-only HTTP status on 127.0.0.1")
    serve.add_argument(
        "--port", type=int, default=8765, metavar="N", help="port on 127.0.0.1 (default 8765; 0 picks a free one)"
    )


def _add_plan_writers(sub: Any, common: argparse.ArgumentParser) -> None:
    draft = sub.add_parser(
        "draft",
        parents=[common],
        help="have the agent write the plan from a requirements document, validated until it is right",
    )
    draft.add_argument("prd", metavar="PRD", help="the requirements document, e.g. PRD.md")
    draft.add_argument(
        "--append", action="store_true", help="plan new stages after the existing milestones (which may be depended on)"
    )
    new = sub.add_parser("new", parents=[common], help="write a milestone file from the template, every section in it")
    new.add_argument("id", metavar="ID", help="the new milestone's id, e.g. 2C")
    new.add_argument("title", metavar="TITLE", help="its title")
    new.add_argument("--deps", metavar="IDS", help="its dependencies, e.g. 1A,1B")


def _add_run_options(p: Any) -> None:
    p.add_argument(
        "--stage",
        type=int,
        metavar="N",
        help="run only stage N (earlier stages must be merged; in dependencies mode only its milestones' Dependencies)",
    )
    p.add_argument("--milestone", metavar="ID", help="run only this milestone, e.g. 1A")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run where it stopped")
    p.add_argument(
        "--schedule",
        choices=("stages", "dependencies"),
        help="stages: each stage waits for the one before (default); dependencies: a milestone starts once "
        "its Dependencies are merged, and merges on its own (overrides config `schedule`)",
    )
    p.add_argument(
        "--validate-only", action="store_true", help="check plan and config, report every problem, run nothing"
    )
    p.add_argument("--whatif", action="store_true", help="show what would run (same as the plan command)")
    p.add_argument(
        "--auto-resume",
        action="store_true",
        help="restart the runner with --resume if it dies (./orchestrator.sh run uses it; AUTO_RESUME=false: off)",
    )


def program_name() -> str:
    """How the user started us: the installed `orchestrator` command, `python -m orchestrator_lib`, or the script."""
    name = Path(sys.argv[0]).name
    if name == "__main__.py":
        return f"python -m {__package__}"
    return "orchestrator" if name == "orchestrator" else "orchestrator.py"


GLOBAL_FLAGS = ("--no-color",)
GLOBAL_OPTIONS = ("--project", "--config")  # each takes a value


def normalise(argv: Sequence[str]) -> list[str]:
    """`orchestrator.py --stage 1` means `orchestrator.py run --stage 1`; global options may come
    before the verb (`--project DIR status`)."""
    args = list(argv)
    first = _first_word(args)
    if first in ("-h", "--help", "--version"):
        return args
    if first is None or first not in COMMANDS:
        return ["run", *args]
    i = args.index(first)
    return [first, *args[:i], *args[i + 1 :]]  # argparse wants the verb first for sub-options


def _first_word(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in GLOBAL_OPTIONS:
            skip = True
        elif arg not in GLOBAL_FLAGS and not arg.startswith(tuple(f"{o}=" for o in GLOBAL_OPTIONS)):
            return arg
    return None

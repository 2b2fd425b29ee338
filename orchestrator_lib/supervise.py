"""Auto-resume: run the runner as a child and restart it with --resume when it dies.

Not restarted: success (0), a failed milestone (1: state saved, a person should look),
a usage error (2) and a user's interrupt (130). Anything else (a crash, exit 3, a kill)
restarts after a pause, up to retry_attempts times.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator_lib.project import load_project

NO_RESTART = {0, 1, 2, 130}


def child_argv(args: argparse.Namespace, script: Path, resume: bool) -> list[str]:
    argv = [sys.executable, str(script), "run"]
    for flag, value in (("--project", args.project), ("--config", args.config), ("--milestone", args.milestone)):
        if value:
            argv += [flag, str(value)]
    if args.stage is not None:
        argv += ["--stage", str(args.stage)]
    if args.no_color:
        argv.append("--no-color")
    if resume:
        argv.append("--resume")
    return argv


def supervise(args: argparse.Namespace, script: Path, pause: float | None = None) -> int:
    project = load_project(args)  # a usage error surfaces here, before any child starts
    attempts = project.config.retry_attempts
    pause = float(os.environ.get("ORCHESTRATOR_RESTART_PAUSE", "5")) if pause is None else pause
    resume = project.config.auto_resume or args.resume
    code = 0
    for restart in range(attempts + 1):
        code = _run_child(child_argv(args, script, resume or restart > 0))
        if code in NO_RESTART:
            return code
        if restart < attempts:
            print(
                f"runner exited with {code}; restarting with --resume in {pause:g}s ({restart + 1}/{attempts})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(pause)
    return code


def _run_child(argv: list[str]) -> int:
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)  # `kill <supervisor>` stops the run the way it stops the runner

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                code = child.wait()
                return 130 if code < 0 and -code == 2 else (code if code >= 0 else 128 - code)
            except KeyboardInterrupt:
                continue  # the child got the same Ctrl-C and shuts down; wait for it
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Fault injection for the resilience tests; does nothing unless ORCHESTRATOR_FAULT is set.

ORCHESTRATOR_FAULT="<point>:<action>[:<n>]" (several separated by commas) makes the runner fail
at a named point, the n-th time it gets there in this process (default the first):

  points   runner-start (lock taken, state open), state-write (before a state change commits),
           merge (after each merge of a stage), move-base (before the base branch moves),
           agent-launch (an agent's launch recorded, its wrapper not started yet)
  actions  kill (SIGKILL itself), crash (an unexpected exception: exit 3),
           enospc (OSError "No space left on device")

ORCHESTRATOR_FAULT_ONCE=<file>: a fault fires only while that file does not exist, and creates
it, so a runner restarted by `./orchestrator.sh run` runs clean. Used by tests/test_resilience.py
and tests/test_chaos.py; not a user setting (the README does not list it).
"""

from __future__ import annotations

import collections
import errno
import os
import signal
import threading
from pathlib import Path

ACTIONS = ("kill", "crash", "enospc")
_hits: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


class InjectedCrashError(RuntimeError):
    """An unexpected error on purpose: what a bug would raise."""


def hit(point: str) -> None:
    """Fail here if ORCHESTRATOR_FAULT names this point and its turn has come."""
    spec = os.environ.get("ORCHESTRATOR_FAULT")
    if not spec:
        return
    with _lock:
        _hits[point] += 1
        count = _hits[point]
    for fault in spec.split(","):
        name, _, rest = fault.strip().partition(":")
        action, _, nth = rest.partition(":")
        if name == point and count == int(nth or 1) and _first_time():
            _fire(action, point)


def _first_time() -> bool:
    marker = os.environ.get("ORCHESTRATOR_FAULT_ONCE")
    if not marker:
        return True
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def _fire(action: str, point: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action == "crash":
        raise InjectedCrashError(f"injected fault at {point}")
    raise ValueError(f"ORCHESTRATOR_FAULT: unknown action {action!r} (valid: {', '.join(ACTIONS)})")

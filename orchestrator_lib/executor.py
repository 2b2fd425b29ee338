"""Where a milestone runs: `Executor.run(services, job) -> MilestoneResult`, chosen by `executor.kind`.

"local" (the default) runs `pipeline.run_milestone` in the runner's own worker thread. "ray" runs the
same function as one task per milestone on a Ray cluster (orchestrator_lib/ray_executor.py); state,
the lock, integration, TASKS.md and the usage-limit pause stay with the runner either way. Ray is an
optional extra (requirements-ray.txt), so it is imported only when it is chosen.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from orchestrator_lib import git
from orchestrator_lib.config import Config
from orchestrator_lib.errors import UsageError
from orchestrator_lib.pipeline import Job, MilestoneResult, Services, run_milestone

RAY_REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-ray.txt"


class Executor(Protocol):
    def run(self, services: Services, job: Job) -> MilestoneResult: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Today's behaviour: the milestone runs in the calling thread, on this machine."""

    def run(self, services: Services, job: Job) -> MilestoneResult:
        return run_milestone(services, job)

    def close(self) -> None:
        """Nothing to release: the threads belong to the runner."""


def make(config: Config, root: Path) -> Executor:
    if config.executor.kind != "ray":
        return LocalExecutor()
    if not ray_installed():
        raise UsageError(ray_missing())
    from orchestrator_lib import ray_executor  # Ray is an optional extra: imported only when chosen

    return ray_executor.RayExecutor(config, root)


def worker_problems(config: Config) -> list[str]:
    """--validate-only on Ray: a tiny task checks that a worker can start git and the agent."""
    if config.executor.kind != "ray" or not ray_installed():
        return []
    from orchestrator_lib import ray_executor  # Ray is an optional extra: imported only when chosen

    found = ray_executor.check_workers(config)
    return [found] if found else []


def checked(config: Config) -> str:
    e = config.executor
    return (
        f"executor: Ray at {e.address}; executor.remote {shown_url(e.remote or '')} reachable; "
        "a worker can start git and the agent"
    )


def ray_installed() -> bool:
    if importlib.util.find_spec("ray") is None:
        return False
    try:  # found is not enough: a half-installed or broken Ray fails on import
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def ray_missing() -> str:
    return (
        'executor.kind is "ray" but Ray is not installed in this Python: '
        f"{sys.executable} -m pip install -r {RAY_REQUIREMENTS}"
    )


def problems(config: Config | None, root: Path) -> list[str]:
    """What stops a run on Ray, found before anything is written: Ray missing, the remote unreachable."""
    if config is None or config.executor.kind != "ray":
        return []
    found = [] if ray_installed() else [ray_missing()]
    remote = config.executor.remote
    if remote:
        unreachable = remote_problem(root, remote)
        found += [unreachable] if unreachable else []
    silent = address_problem(config.executor.address)
    return [*found, silent] if silent else found


ADDRESS_TIMEOUT = 5.0


def address_problem(address: str) -> str | None:
    """A cluster address that does not answer: ray.init would retry it for minutes and not hear a stop."""
    if not address or address == "auto":
        return None  # Ray finds the local cluster itself, and says at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT):
            return None
    except (OSError, ValueError) as e:
        return (
            f"executor.address {address!r} does not answer ({e}): start the cluster there "
            "(`ray start --head`), or fix the address (README: Past one machine)"
        )


def remote_problem(root: Path, remote: str) -> str | None:
    out = git.ls_remote(root, remote)
    if out.returncode == 0:
        return None
    said = [line.strip() for line in (out.stderr or out.stdout).splitlines() if line.strip()]
    errors = [line for line in said if line.startswith(("fatal:", "error:"))]  # git's reason, not its advice
    why = "; ".join(errors or said[-1:]) or f"exit {out.returncode}"
    return (
        f"executor.remote {shown_url(remote)} is not reachable from this machine (git ls-remote: {why}): "
        "check the URL, that the repository exists (git init --bare) and this machine's git credentials"
    )


def shown_url(url: str) -> str:
    """The URL without a password or token in it: it is printed and logged."""
    parts = urlsplit(url)
    if not parts.password and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user and not parts.password else host))

"""A real two-node Ray cluster on this machine for the tests (and bench/bench_ray.py).

`ray start --head` and a second `ray start --address`, each with its own temp dir (short: Ray's
unix sockets), few CPUs and no dashboard. Each node offers one `slot` (a custom resource): with
`executor.resources` {"CPU": 1, "slot": 1} two milestones running at once must be on different
nodes. Stopping kills exactly the processes of this cluster (found by its temp dir, and their
descendants), never every Ray process of the machine (`ray stop` would).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil

RAY = Path(sys.executable).with_name("ray")


class Node(NamedTuple):
    temp_dir: Path

    def raylet(self) -> psutil.Process:
        """The node's raylet (its pid is RAY_RAYLET_PID in every worker of the node)."""
        for p in _processes_under(self.temp_dir):
            if p.name() == "raylet":
                return p
        raise AssertionError(f"no raylet for {self.temp_dir}")


@dataclasses.dataclass
class Cluster:
    address: str
    top: Path
    head: Node
    second: Node
    env: dict[str, str]
    second_cpus: int = 1

    def stop(self) -> None:
        stop_processes(self.top)
        shutil.rmtree(self.top, ignore_errors=True)

    def start_second(self) -> None:
        resources = "--resources=" + json.dumps({"slot": 1, "second": 1})
        _ray(self.env, f"--address={self.address}", f"--num-cpus={self.second_cpus}",
             f"--temp-dir={self.second.temp_dir}", resources, "--node-ip-address=127.0.0.1")  # fmt: skip

    def replace_second(self) -> None:
        """After a test killed the second node: its leftovers stopped, a new second node started."""
        stop_processes(self.second.temp_dir)
        self.second = Node(self.top / f"w{time.monotonic_ns()}")
        self.start_second()
        wait_for(lambda: _alive_nodes(self.env, self.address) == 2, 60, "the new second node")


def start(head_cpus: int = 2, second_cpus: int = 1) -> Cluster:
    top = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: unix socket paths are limited
    home = top / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),  # workers' git and agents never see the real user's files
        "GIT_CONFIG_NOSYSTEM": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # a dead node is noticed in seconds, not the default half minute
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "4",
        "RAY_health_check_timeout_ms": "500",
    }
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "RAY_ADDRESS"):
        env.pop(name, None)
    port = _free_port()
    head, second = Node(top / "h"), Node(top / "w")
    cluster = Cluster(f"127.0.0.1:{port}", top, head, second, env, second_cpus)
    try:
        _ray(env, "--head", f"--port={port}", f"--num-cpus={head_cpus}", "--include-dashboard=false",
             f"--temp-dir={head.temp_dir}", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
             "--resources=" + json.dumps({"slot": 1}))  # fmt: skip
        cluster.start_second()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _ray(env: dict[str, str], *args: str) -> None:
    done = subprocess.run((str(RAY), "start", *args), env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _alive_nodes(env: dict[str, str], address: str) -> int:
    """Alive nodes as the cluster's GCS sees them (asked in a process of its own: no driver here)."""
    code = "import ray,sys; ray.init(address=sys.argv[1]); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run((sys.executable, "-c", code, address), env=env, capture_output=True, text=True, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else -1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_under(top: Path) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != me and any(str(top) in a for a in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def stop_processes(top: Path) -> None:
    """Every process of the cluster: those naming its temp dir, and all their descendants."""
    procs = {p.pid: p for p in _processes_under(top)}
    for p in list(procs.values()):
        try:
            procs.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    for p in procs.values():
        try:
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(list(procs.values()), timeout=15)


def wait_for(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(0.1)

"""Shared fixtures: real git repositories in tmp_path, the scripted fake agent, the CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from agent_clis import *  # noqa: F403  (the real Codex, Aider and Gemini CLIs + a fake OpenAI server)
from claude_support import *  # noqa: F403  (the real Claude CLI + fake model server fixtures)

REPO = Path(__file__).resolve().parent.parent

# Property-based tests (tests/test_fuzz.py): bounded for a loaded 2-core CI, no example database
# written into the repository, no per-example deadline (a busy machine is not a failure).
# HYPOTHESIS_PROFILE=deep explores far more.
hypothesis.settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.function_scoped_fixture],
)
hypothesis.settings.register_profile("deep", parent=hypothesis.settings.get_profile("ci"), max_examples=3000)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # its caches go to the temp folder, not the checkout
    hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "orchestrator_lib-hypothesis")
ORCHESTRATOR = REPO / "orchestrator.py"
FAKE_AGENT = Path(__file__).resolve().parent / "fake_agent.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _no_real_user_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test that touches the real user's home or this checkout's runtime folders."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in (
        *("ORCHESTRATOR_CONFIG", "LOG_LEVEL", "AUTO_RESUME", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),
        *("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY"),
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    before = {p: p.exists() for p in (REPO / ".orchestrator", REPO / ".worktree", REPO / "logs")}
    yield
    touched = [str(p) for p, existed in before.items() if p.exists() and not existed]
    assert not touched, f"a test wrote runtime state into the checkout: {touched}"


class Project:
    """A real git repository with milestones and a config driving the fake agent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.agent_log = root.parent / "agent-log.jsonl"
        self.script_path = root.parent / "agent-script.json"
        self.agent_state = root.parent / "agent-state"
        self.agent_state.mkdir(exist_ok=True)
        self.config: dict[str, Any] = {}

    def git(self, *args: str) -> str:
        return subprocess.run(("git", *args), cwd=self.root, check=True, capture_output=True, text=True).stdout

    def milestone(
        self,
        mid: str,
        title: str = "",
        tasks: str = "- Do the work.",
        exit_checks: Sequence[str] = (),
        entry: Sequence[str] = (),
        deps: Sequence[str] = (),
        estimate: str = "10 minutes",
        extra: str = "",
    ) -> Path:
        lines = [
            f"# {title or 'Milestone ' + mid}",
            "",
            "## Description",
            f"Milestone {mid}.",
            extra,
            "",
            "## Entry Requirements",
            *([f"- {e}" for e in entry] or ["- None"]),
            "",
            "## Tasks",
            tasks,
            "",
            "## Exit Criteria",
            *([f"- {c}" for c in exit_checks] or ["- Work is done"]),
            "",
            "## Dependencies",
            *([f"- {d}" for d in deps] or ["None"]),
            "",
            "## Estimated Time",
            estimate,
            "",
        ]
        path = self.root / "milestones" / f"{mid}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines))
        return path

    def script(self, script: dict[str, Any]) -> None:
        self.script_path.write_text(json.dumps(script))

    def configure(self, **overrides: Any) -> None:
        agent = {
            "preset": "command",
            "command": [sys.executable, str(FAKE_AGENT)],
            "env": {
                "FAKE_AGENT_SCRIPT": str(self.script_path),
                "FAKE_AGENT_LOG": str(self.agent_log),
                "FAKE_AGENT_STATE": str(self.agent_state),
            },
            "timeout_minutes": 2,
            "idle_timeout_minutes": 1,
        }
        agent.update(overrides.pop("agent", {}))
        self.config = {
            "max_parallel_tasks": 4,
            "retry_attempts": 0,
            "rate_limit": {"grace_seconds": 0, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1},
            "monitor": {"max_cpu_percent": 100, "max_memory_percent": 100, "min_free_disk_gb": 0},
            "agent": agent,
            **overrides,
        }
        (self.root / "orchestrator.config.json").write_text(json.dumps(self.config, indent=2))

    def commit_plan(self, message: str = "Add the plan") -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_orchestrator(self.root, *args, env=env, timeout=timeout)

    def start(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start a command (the runner by default) in the background, as a terminal would."""
        return subprocess.Popen(
            argv or (sys.executable, str(ORCHESTRATOR)),
            cwd=self.root,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def agent_calls(self) -> list[dict[str, Any]]:
        if not self.agent_log.exists():
            return []
        return [json.loads(line) for line in self.agent_log.read_text().splitlines() if line.strip()]

    def paused_until(self) -> float:
        """The run's persisted pause, read straight from the state store (faster than `status`)."""
        from orchestrator_lib.state import StateStore

        store = StateStore.open(self.root, readonly=True)
        if store is None:
            return 0.0
        try:
            return store.run().paused_until
        finally:
            store.close()

    def status_json(self) -> dict[str, Any]:
        out = self.run("status", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def statuses(self) -> dict[str, str]:
        return {m["id"]: m["status"] for m in self.status_json()["milestones"]}

    def trailers(self, ref: str = "main") -> list[str]:
        out = self.git("log", "--first-parent", "--format=%(trailers:key=Milestone,valueonly)", ref)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def branches(self, pattern: str = "milestone/*") -> list[str]:
        return self.git("for-each-ref", "--format=%(refname:short)", f"refs/heads/{pattern}").split()

    def show(self, path: str, ref: str = "main") -> str:
        return self.git("show", f"{ref}:{path}")


def run_orchestrator(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        (sys.executable, str(ORCHESTRATOR), *args),
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def init_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for args in (
        ("init", "-q", "-b", "main"),
        ("config", "user.email", "t@example.com"),
        ("config", "user.name", "Test"),
    ):
        subprocess.run(("git", *args), cwd=root, check=True)
    (root / "README.md").write_text("# project\n")
    subprocess.run(("git", "add", "-A"), cwd=root, check=True)
    subprocess.run(("git", "commit", "-q", "-m", "init"), cwd=root, check=True)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "repo"
    init_repo(root)
    p = Project(root)
    p.configure()
    return p

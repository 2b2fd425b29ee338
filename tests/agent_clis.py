"""The real Codex, Aider and Gemini CLIs for the tests: pinned, installed into .tools/ by
`./orchestrator.sh test` (install_agents_for_tests), each with a fixture that skips when the CLI
is missing, but fails in CI, where it must run (like claude_support.claude_cli).

tests/conftest.py wires the fixtures in with `from agent_clis import *`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fake_openai import FakeOpenAI, Item

if TYPE_CHECKING:  # conftest imports this module
    from conftest import Project

__all__ = ["aider_cli", "codex_cli", "fake_openai_server", "gemini_cli", "pinned_version"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS = REPO_ROOT / ".tools"
LOCATIONS = {  # env var overriding the path, the path under .tools/
    "codex": ("CODEX_CLI", TOOLS / "codex" / "node_modules" / ".bin" / "codex"),
    "aider": ("AIDER_CLI", TOOLS / "aider" / "bin" / "aider"),
    "gemini": ("GEMINI_CLI", TOOLS / "gemini" / "node_modules" / ".bin" / "gemini"),
}


def pinned_version(name: str) -> str:
    """The version orchestrator.sh installs (CODEX_VERSION=…), the one source of the pin."""
    text = (REPO_ROOT / "orchestrator.sh").read_text()
    found = re.search(rf'(?m)^{name.upper()}_VERSION="([^"]+)"', text)
    assert found, f"orchestrator.sh pins no {name} version"
    return found.group(1)


def _cli(name: str) -> str:
    var, local = LOCATIONS[name]
    path = os.environ.get(var) or str(local)
    if Path(path).is_file():
        return path
    reason = f"the {name} CLI is not installed at {path}; `./orchestrator.sh test` installs it (or set {var})"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def codex_cli() -> str:
    return _cli("codex")


@pytest.fixture(scope="session")
def aider_cli() -> str:
    return _cli("aider")


@pytest.fixture(scope="session")
def gemini_cli() -> str:
    return _cli("gemini")


@pytest.fixture(name="fake_openai")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


class CliProject:
    """A test project whose agent is one of these CLIs, talking to the fake server."""

    def __init__(self, project: Project, server: FakeOpenAI, cli: str, scratch: Path) -> None:
        self.p, self.server, self.cli, self.scratch = project, server, cli, scratch

    def use(self, agent: dict[str, Any], **overrides: Any) -> None:
        """Configure `agent` with review off unless the test turns it on."""
        self.p.configure(agent=agent, **{"review": {"enabled": False, "max_rounds": 1}, **overrides})

    def only_the_fake(self) -> dict[str, str]:
        """Proxy variables pointing at the fake, which records any request meant for another host."""
        proxies = {var: self.server.proxy for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
        return {**proxies, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def script(self, mid: str, *items: Item) -> None:
        self.server.add_script(items, cwd_contains=f".worktree/{mid}")

    def log(self, mid: str) -> str:
        path = self.p.root / "logs" / f"{mid}.log"
        return path.read_text() if path.exists() else ""

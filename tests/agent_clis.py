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

import pytest
from fake_openai import FakeOpenAI

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

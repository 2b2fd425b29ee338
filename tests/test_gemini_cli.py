"""The orchestrator driving the real Gemini CLI (pinned in orchestrator.sh) against a fake Gemini API
on 127.0.0.1 (tests/fake_openai.py serves `:streamGenerateContent` too).

gemini-cli takes its base URL from GOOGLE_GEMINI_BASE_URL. Set alone, that selects its "gateway"
auth, which headless runs refuse ("Invalid auth method selected.", exit 41), so the user settings
select the API key (security.auth.selectedType "gemini-api-key") and turn off usage statistics,
which would otherwise go to play.googleapis.com. The proxy variables point at the fake, which
records any request meant for another host. Skipped locally without the CLI; failed in CI.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import fake_openai as fo
import pytest
from agent_clis import CliProject
from conftest import Project
from fake_openai import FakeOpenAI, RecordedRequest

from orchestrator_lib.agents import AUTH_HINTS

WAIT = 90.0
FAKE_GEMINI_KEY = "test-gemini-key-not-secret"
BAD_KEY = ("API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", "API_KEY_INVALID")


class GeminiProject(CliProject):
    def configure(self, **overrides: Any) -> None:
        settings = Path(os.environ["HOME"]) / ".gemini" / "settings.json"  # HOME is the test's own
        settings.parent.mkdir(parents=True, exist_ok=True)
        auth = {"auth": {"selectedType": "gemini-api-key"}}
        settings.write_text(json.dumps({"security": auth, "privacy": {"usageStatisticsEnabled": False}}))
        env = {
            "GOOGLE_GEMINI_BASE_URL": self.server.proxy,
            "GEMINI_API_KEY": FAKE_GEMINI_KEY,
            **self.only_the_fake(),
        }
        agent = {
            "preset": "gemini",
            "executable": self.cli,
            "model": "gemini-fake",
            "env": env,
            "timeout_minutes": 2,
            "idle_timeout_minutes": 1,
        }
        self.use(agent, **overrides)

    def requests_of(self, mid: str) -> list[RecordedRequest]:
        return [r for r in self.server.model_requests() if f".worktree/{mid}" in r.text]


@pytest.fixture
def gp(project: Project, fake_openai: FakeOpenAI, gemini_cli: str, tmp_path: Path) -> GeminiProject:
    return GeminiProject(project, fake_openai, gemini_cli, tmp_path / "scratch")


def test_the_pinned_gemini_is_the_one_installed(gemini_cli: str) -> None:
    from agent_clis import pinned_version

    package = Path(gemini_cli).resolve().parents[1] / "package.json"
    if package.is_file():
        assert json.loads(package.read_text())["version"] == pinned_version("gemini")


def test_gemini_implements_a_milestone_that_is_merged(gp: GeminiProject) -> None:
    gp.p.milestone("1A", "Hello", exit_checks=["The greeting exists (`test -f hello.txt`)"])
    gp.p.commit_plan()
    gp.configure()
    gp.server.add_script([fo.shell("printf 'hello from gemini\\n' > hello.txt"), fo.say("Created hello.txt.")])

    out = gp.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr + gp.log("1A")
    assert gp.p.show("hello.txt") == "hello from gemini\n"
    assert gp.p.trailers() == ["1A"]
    first, *_ = gp.server.model_requests()
    assert first.path.startswith("/v1beta/models/gemini-fake:streamGenerateContent")
    assert first.headers.get("x-goog-api-key") == FAKE_GEMINI_KEY
    assert "You are implementing milestone 1A" in first.text
    assert "functionResponse" in gp.server.model_requests()[-1].text  # the shell ran, its result went back
    assert {r.path for r in gp.server.outside_requests()} == set()  # nothing but the fake was asked


def test_an_auth_failure_stops_every_task_with_the_fix(gp: GeminiProject) -> None:
    gp.p.milestone("1A")
    gp.p.milestone("1B")
    gp.p.commit_plan()
    gp.configure(retry_attempts=3)

    def refused_once_1b_is_busy(_request: RecordedRequest) -> fo.Error:
        assert gp.server.wait_for(lambda rs: any(".worktree/1B" in r.text for r in rs), WAIT)
        return fo.gemini_error(400, *BAD_KEY)

    gp.script("1A", fo.respond(refused_once_1b_is_busy))
    gp.script("1B", gp.server.stall(WAIT))  # busy when 1A's key is refused

    started = time.monotonic()
    out = gp.p.run(timeout=WAIT)

    assert out.returncode == 1, out.stdout + out.stderr
    assert time.monotonic() - started < WAIT / 2  # 1B's agent was stopped, not waited for
    assert AUTH_HINTS["gemini"] in out.stdout  # names the fix
    assert "API_KEY_INVALID" in gp.log("1A") or "API key not valid" in gp.log("1A")
    assert len(gp.requests_of("1A")) == 1  # an auth error is never retried
    statuses = gp.p.statuses()
    assert statuses["1A"] == "failed" and statuses["1B"] != "running"
    assert gp.p.trailers() == []
    assert FAKE_GEMINI_KEY not in out.stdout + out.stderr

"""The orchestrator driving the real Aider (pinned in orchestrator.sh, its own venv in .tools/aider)
against a fake OpenAI Chat Completions API on 127.0.0.1.

Aider reaches the fake through OPENAI_API_BASE with `--model openai/gpt-fake` and answers in the
whole-file edit format. LITELLM_LOCAL_MODEL_COST_MAP=True and a model metadata file keep litellm
and aider from fetching price lists; every proxy variable points at the fake, which records any
request meant for another host, so the tests see that nothing else leaves the machine.
Skipped locally without Aider; failed in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fake_openai as fo
import pytest
from agent_clis import CliProject
from conftest import Project
from fake_openai import FakeOpenAI, RecordedRequest

WAIT = 120.0
JUDGED = "[orchestrator] transient: "  # the runner's verdict on a run, in the milestone's log


class AiderProject(CliProject):
    def configure(self, **overrides: Any) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        metadata = self.scratch / "model-metadata.json"
        model = {"max_input_tokens": 128000, "max_output_tokens": 4096, "litellm_provider": "openai", "mode": "chat"}
        metadata.write_text(json.dumps({f"openai/{fo.MODEL}": {**model, "input_cost_per_token": 0.0}}))
        env = {
            "OPENAI_API_BASE": self.server.url,
            "OPENAI_API_KEY": fo.FAKE_OPENAI_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **self.only_the_fake(),
        }
        agent = {
            "preset": "aider",
            "executable": self.cli,
            "model": f"openai/{fo.MODEL}",
            "extra_args": ["--edit-format", "whole", "--model-metadata-file", str(metadata)],
            "env": env,
            "timeout_minutes": 3,
            "idle_timeout_minutes": 2,
        }
        self.use(agent, **overrides)


@pytest.fixture
def ap(project: Project, fake_openai: FakeOpenAI, aider_cli: str, tmp_path: Path) -> AiderProject:
    return AiderProject(project, fake_openai, aider_cli, tmp_path / "scratch")


def test_the_pinned_aider_is_the_one_installed(aider_cli: str) -> None:
    from agent_clis import pinned_version

    python = Path(aider_cli).with_name("python")
    if python.is_file():
        import subprocess

        out = subprocess.run(
            (str(python), "-c", "import aider; print(aider.__version__)"), capture_output=True, text=True, timeout=60
        )
        assert out.stdout.strip() == pinned_version("aider"), out.stderr


def test_aider_implements_a_milestone_that_is_merged(ap: AiderProject) -> None:
    ap.p.milestone("1A", "Hello", exit_checks=["The greeting exists (`test -f hello.txt`)"])
    ap.p.commit_plan()
    ap.configure()
    ap.server.add_script([fo.whole_file("hello.txt", "hello from aider\n")])

    out = ap.p.run(timeout=WAIT)

    assert out.returncode == 0, out.stdout + out.stderr + ap.log("1A")
    assert ap.p.show("hello.txt") == "hello from aider\n"
    assert ap.p.trailers() == ["1A"]
    (request,) = ap.server.model_requests()
    assert request.path == "/v1/chat/completions" and request.body["model"] == fo.MODEL
    assert "You are implementing milestone 1A" in request.text
    assert "with whole edit format" in ap.log("1A")
    assert {r.path for r in ap.server.outside_requests()} == set()  # nothing but the fake was asked
    assert ".aider" not in ap.p.git("ls-tree", "-r", "--name-only", "main")  # aider's own files stay out


def test_aider_giving_up_on_a_rate_limit_exits_0_and_is_retried(ap: AiderProject) -> None:
    ap.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    ap.p.commit_plan()
    ap.configure(retry_attempts=1)
    log = ap.p.root / "logs" / "1A.log"

    def limited_until_aider_gave_up(_request: RecordedRequest) -> fo.Error | fo.Say:
        if JUDGED in (log.read_text() if log.exists() else ""):  # aider gave up once: now answer
            return fo.whole_file("1A.txt", "A\n")
        return fo.rate_limited()

    ap.server.default = fo.respond(limited_until_aider_gave_up)

    out = ap.p.run(timeout=WAIT * 2)

    assert out.returncode == 0, out.stdout + out.stderr + ap.log("1A")
    assert ap.p.show("1A.txt") == "A\n"
    text = ap.log("1A")
    gave_up = text[: text.index(JUDGED)]
    assert "litellm.RateLimitError" in gave_up and "The API provider has rate limited you" in gave_up  # aider's words
    assert gave_up.rstrip().splitlines()[-1].startswith("===== exit 0 after ")  # it gave up "successfully"
    assert f"{JUDGED}The API provider has rate limited you. Try again later or check your quotas.; retrying" in text
    assert ap.server.outside_requests() == []

"""Aider's reported cost counts toward the budgets (the real, pinned Aider against the fake OpenAI API)."""

from __future__ import annotations

import json
from pathlib import Path

import fake_openai as fo
import pytest
from conftest import Project
from fake_openai import FakeOpenAI
from test_aider_cli import WAIT, AiderProject

PRICE = 0.001  # dollars per input token


@pytest.fixture
def ap(project: Project, fake_openai: FakeOpenAI, aider_cli: str, tmp_path: Path) -> AiderProject:
    return AiderProject(project, fake_openai, aider_cli, tmp_path / "scratch")


def priced(ap: AiderProject) -> None:
    """The model's metadata with a price, so Aider prints "Cost: $… message, $… session"."""
    metadata = ap.scratch / "model-metadata.json"
    data = json.loads(metadata.read_text())
    data[f"openai/{fo.MODEL}"]["input_cost_per_token"] = PRICE
    metadata.write_text(json.dumps(data))


def test_aiders_reported_cost_is_the_milestones_spend(ap: AiderProject) -> None:
    ap.p.milestone("1A", exit_checks=["Its file exists (`test -f 1A.txt`)"])
    ap.p.commit_plan()
    ap.configure(budget={"milestone_usd": 0.5})
    priced(ap)
    ap.server.add_script([fo.whole_file("1A.txt", "A\n")])

    out = ap.p.run(timeout=WAIT)

    assert out.returncode == 1, out.stdout + out.stderr
    text = ap.log("1A")
    said = next(line for line in text.splitlines() if line.startswith("Tokens: "))  # aider's own words
    cost = float(said.rsplit("$", 1)[1].split()[0])
    assert cost > 0.5, said
    record = next(m for m in ap.p.status_json()["milestones"] if m["id"] == "1A")
    assert record["cost_usd"] == pytest.approx(cost)
    assert record["status"] == "failed" and record["reason"] == f"budget reached (${cost:.2f} of $0.50)"
    assert len(ap.server.model_requests()) == 1  # not retried

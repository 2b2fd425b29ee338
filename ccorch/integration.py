"""The resolve role: an agent run in the integration worktree when a merge conflicts or breaks tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ccorch import git, prompts
from ccorch.pipeline import Paused, Services, _Context, _run_role, _Tally
from ccorch.plan import Milestone


def make_resolver(s: Services, stage: int, milestones: Sequence[Milestone]):  # type: ignore[no-untyped-def]
    """A callable for WorktreeManager.integrate: (worktree, conflicted, failure) -> resolved?"""
    quiet = s._replace(emit=_only_pauses(s))
    stand_in = milestones[0]._replace(id=f"stage{stage}-resolve", title=f"integrate stage {stage}")

    def resolve(path: Path, conflicted: Sequence[str], failure: str) -> bool:
        ctx = _Context(quiet, stand_in, path, git.rev_parse(path, "HEAD") or "", _Tally())
        prompt = prompts.resolve(stage, conflicted, milestones, str(path), failure)
        outcome = _run_role(ctx, "resolve", prompt, resume_session=False)
        return outcome.kind == "ok"

    return resolve


def _only_pauses(s: Services):  # type: ignore[no-untyped-def]
    # Integration runs on the main thread: progress of the stand-in milestone is not state,
    # but a usage-limit pause still is.
    def emit(event: object) -> None:
        if isinstance(event, Paused):
            s.emit(event)

    return emit

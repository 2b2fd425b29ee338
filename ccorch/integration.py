"""The resolve role: an agent run in the integration worktree when a merge conflicts or breaks tests."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ccorch import git, prompts
from ccorch.pipeline import Paused, Services, _Context, _log_line, _run_role, _Tally
from ccorch.plan import Milestone


def make_resolver(s: Services, stage: int, milestones: Sequence[Milestone]):  # type: ignore[no-untyped-def]
    """A callable for WorktreeManager.integrate: (worktree, conflicted, failure) -> resolved?"""
    quiet = s._replace(emit=_only_pauses(s))
    stand_in = milestones[0]._replace(id=f"stage{stage}-resolve", title=f"integrate stage {stage}")

    def resolve(path: Path, conflicted: Sequence[str], failure: str) -> bool:
        ctx = _Context(quiet, stand_in, path, git.rev_parse(path, "HEAD") or "", _Tally())
        prompt = prompts.resolve(stage, conflicted, milestones, str(path), failure)
        outcome = _run_role(ctx, "resolve", prompt, resume_session=False)
        held = s.validator.secrets_in_worktree(path) if outcome.kind == "ok" else None
        if held is not None:  # its fix would be committed next: a secret must not become an object
            _log_line(ctx, f"the resolver's fix is not used: {held.failure_output()}")
        return outcome.kind == "ok" and held is None

    return resolve


def _only_pauses(s: Services):  # type: ignore[no-untyped-def]
    # Integration runs on the main thread: progress of the stand-in milestone is not state,
    # but a usage-limit pause still is.
    def emit(event: object) -> None:
        if isinstance(event, Paused):
            s.emit(event)

    return emit


def finish_by_hand(
    root: Path,
    base_branch: str,
    branches: Sequence[tuple[str, str, str]],
    failed: str,
    conflicted: Sequence[str],
    test_command: str | None,
) -> str:
    """The exact commands that finish a blocked stage by hand; `branches` is (id, title, branch)."""
    lines = [f"To finish by hand, in {root} with {base_branch} checked out and nothing staged:"]
    for mid, title, branch in branches:
        subject, trailer = shlex.quote(f"Merge milestone {mid}: {title}"), shlex.quote(f"Milestone: {mid}")
        lines.append(f"    git merge --no-ff {branch} -m {subject} -m {trailer}")
        if mid == failed and conflicted:
            paths = " ".join(shlex.quote(p) for p in conflicted)
            lines += [f"    # edit {', '.join(conflicted)} to resolve the conflicts, then:"]
            lines += [f"    git add -- {paths}", "    git commit --no-edit"]
        elif mid == failed:
            lines.append(f"    # make `{test_command}` pass again, then commit the fix")
    lines.append("then run the orchestrator again: it reads the `Milestone:` trailers and carries on.")
    return "\n".join(lines)

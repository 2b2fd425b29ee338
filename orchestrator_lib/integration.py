"""Integration of a stage: its milestones merged in a worktree of their own, checked, then the base moved.

The resolve role is an agent run in the integration worktree when a merge conflicts or breaks tests.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator_lib import conflicts, faults, git, launches, prompts, render, worktree_prep
from orchestrator_lib.errors import EXIT_OK
from orchestrator_lib.pipeline import Paused, Services, agent_dir, run_resolver
from orchestrator_lib.plan import Milestone
from orchestrator_lib.reporter import Reporter
from orchestrator_lib.state import MilestoneState, Status, update
from orchestrator_lib.stops import StopControl
from orchestrator_lib.worktree_prep import Isolation, Preparer

if TYPE_CHECKING:
    from advanced import Integration


def make_resolver(s: Services, stage: int, milestones: Sequence[Milestone], isolation: Isolation | None = None):  # type: ignore[no-untyped-def]
    """A callable for WorktreeManager.integrate: (worktree, conflicted, failure) -> resolved?"""
    quiet = s._replace(emit=_only_pauses(s))
    stand_in = milestones[0]._replace(id=f"stage{stage}-resolve", title=f"integrate stage {stage}")

    def resolve(path: Path, conflicted: Sequence[str], failure: str) -> bool:
        prompt = prompts.resolve(stage, conflicted, milestones, str(path), failure)
        return run_resolver(quiet, stand_in, path, prompt, isolation)

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


class StageMerger:
    """One stage's integration; returns the run's exit code (EXIT_OK when the base branch moved)."""

    def __init__(
        self,
        services: Services,
        reporter: Reporter,
        stops: StopControl,
        tidy: Callable[[list[Milestone]], None],
        preparer: Preparer,  # copy, link and setup of the integration worktree, in its environment
        lazy: bool = False,  # leave the merged integration worktree to the caller (and to the next merge)
    ):
        self.lazy = lazy
        self.preparer = preparer
        self.s = services
        self.cfg = services.config
        self.worktrees = services.worktrees
        self.reporter = reporter
        self.stops = stops
        self._tidy = tidy
        self._old = ""  # the base branch's commit when the integration began

    def merge(self, stage: int, milestones: list[Milestone]) -> int:
        """Stages mode: the stage's branches, those predicted to merge cleanly first, all or nothing."""
        milestones = self._clean_first(milestones)
        self.reporter.say(f"stage {stage}: merging {', '.join(m.id for m in milestones)}")
        result = self._integrate(f"stage {stage}", stage, milestones)
        if isinstance(result, int):
            return result
        if not result.ok:
            return self._failed(stage, milestones, result)
        return self._apply(f"stage {stage}", milestones, result)

    def merge_one(self, m: Milestone) -> tuple[int, str]:
        """Dependencies mode's merge queue: one milestone on its own. (EXIT_OK, "") merged; (EXIT_OK,
        reason) not merged, the milestone blocked with its branch kept; (code, "") the run ends."""
        self.reporter.say(f"merging {m.id}")
        result = self._integrate(m.id, m.stage, [m])
        if isinstance(result, int):
            return result, ""
        if not result.ok:
            self.worktrees.drop_integration()
            reason = f"{result.reason}; its branch {self.worktrees.branch_for(m.id)} is kept"
            self.reporter.store.put(update(self.reporter.record(m.id), status=Status.BLOCKED, reason=reason))
            self.reporter.render()
            return EXIT_OK, reason
        return self._apply(m.id, [m], result), ""

    def _clean_first(self, milestones: list[Milestone]) -> list[Milestone]:
        """The forecast's order (git merge-tree): clean merges first; id order on a git older than 2.38."""
        if len(milestones) < 2 or not conflicts.can_predict(self.s.root):
            return milestones
        by_id = {m.id: m for m in milestones}
        pairs = [(m.id, self.worktrees.branch_for(m.id)) for m in milestones]
        found = conflicts.forecast(self.s.root, self.worktrees.base_commit(), pairs)
        for mid, files in found.conflicts.items():
            self.reporter.say(f"  {mid} is predicted to conflict in {', '.join(files)}: it merges last")
        return [by_id[mid] for mid in found.order]

    def _integrate(self, label: str, stage: int, milestones: list[Milestone]) -> Integration | int:
        """The merges in a fresh integration worktree; an exit code when the run must end instead."""
        resolver = make_resolver(self.s, stage, milestones, self.preparer.isolation())
        self._old = self.worktrees.base_commit()
        short = self._wait_for_disk()
        if short and self.stops.is_set():
            self.reporter.interrupted(self.s.root)
        if short:
            return self.reporter.fail(f"{label} not merged: {short}; free some space, then run again")
        items, prep = [(m.id, m.title) for m in milestones], self.preparer.integration()
        result = self.worktrees.integrate(items, self._after_merge, resolver, lambda p: worktree_prep.prepare(prep, p))
        if self.stops.is_set():  # nothing has moved yet: drop the half-done integration, resume redoes it
            self.worktrees.drop_integration()
            self.reporter.interrupted(self.s.root)
        for note in result.notes:
            self.reporter.say(f"  {note}")
        return result

    def _apply(self, label: str, milestones: list[Milestone], result: Integration) -> int:
        merged = self._mark_merged(milestones, result.merges)
        self._commit_tasks_file(label, merged)
        new = git.rev_parse(self.worktrees.integration_path, "HEAD") or result.commit
        faults.hit("move-base")
        blocking = self.worktrees.move_base(self._old, new)
        if blocking:
            return self._base_blocked(label, blocking)
        if not self.lazy:  # lazy: the caller drops it once the next milestones have started
            self.worktrees.drop_integration()
        self.reporter.store.put(*merged.values())  # only now: the base branch holds the merges
        for mid in merged:  # a merged milestone's agents are never taken over again
            launches.clear(agent_dir(self.s), mid)
        self._tidy(milestones)
        self.reporter.render()
        self.reporter.say(f"{label} merged into {self.worktrees.base_branch} ({new[:10]})")
        return EXIT_OK

    def _wait_for_disk(self) -> str | None:
        """Hold while free disk is short (the integration worktree needs room), up to monitor.max_wait_minutes."""
        deadline = time.monotonic() + self.cfg.monitor.max_wait_minutes * 60
        short = self.s.monitor.disk_shortage()
        while short and time.monotonic() < deadline and not self.stops.wait(self.cfg.monitor.interval_seconds):
            short = self.s.monitor.disk_shortage()
        return short

    def _after_merge(self, path: Path) -> str | None:
        faults.hit("merge")
        if self.stops.is_set():
            return "stopped by the user"
        prep = self.preparer.integration()  # a lockfile a milestone changed gets a fresh install here too
        return worktree_prep.refresh_links(prep, path) or self.s.validator.merged(path, dict(prep.env))

    def _mark_merged(self, milestones: list[Milestone], merges: dict[str, str]) -> dict[str, MilestoneState]:
        record = self.reporter.record
        return {
            m.id: update(record(m.id), status=Status.MERGED, merge_commit=merges[m.id], reason="") for m in milestones
        }

    def _commit_tasks_file(self, label: str, merged: dict[str, MilestoneState]) -> None:
        store = self.reporter.store
        records = {**store.milestones(), **merged}
        run = store.run()
        text = render.tasks_markdown(render.snapshot(self.reporter.plan, records, run, caps=self.reporter.caps))
        render.write_atomic(self.worktrees.integration_path / self.cfg.tasks_file, text)
        git.commit_all(self.worktrees.integration_path, f"Update {self.cfg.tasks_file}: {label} merged")

    def _failed(self, stage: int, milestones: list[Milestone], result: Integration) -> int:
        self.worktrees.drop_integration()
        culprit = next((m for m in milestones if m.id == result.failed), milestones[-1])
        self.reporter.store.put(update(self.reporter.record(culprit.id), status=Status.BLOCKED, reason=result.reason))
        base = self.worktrees.base_branch
        branches = [(m.id, m.title, self.worktrees.branch_for(m.id)) for m in milestones]
        test = self.cfg.validation.test_command
        how = finish_by_hand(self.s.root, base, branches, culprit.id, result.conflicted, test)
        return self.reporter.fail(
            f"stage {stage} blocked: {result.reason}\n{base} was not moved; every milestone/* branch is kept. {how}"
        )

    def _base_blocked(self, label: str, blocking: list[str]) -> int:
        kept = self.worktrees.keep_integration(f"orchestrator/{label.replace(' ', '-')}")
        self.worktrees.drop_integration()
        reason = (
            f"your uncommitted changes in {', '.join(blocking)} would be overwritten; the merged result is "
            f"on branch {kept}. Commit or stash them, then run again: it moves {self.worktrees.base_branch} "
            f"there (it also refreshes {self.cfg.tasks_file}, which blocks a plain `git merge --ff-only`)"
        )
        return self.reporter.fail(reason, f"{label} merged but not applied: {reason}")

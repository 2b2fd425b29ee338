"""Start-up repairs: what a previous run (killed, crashed or interrupted) left behind, put right before work.

Git is the source of truth for what is merged; the state store is a cache brought in line with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ccorch import agents, git, leftovers, orphans, safe_delete
from ccorch.config import Config
from ccorch.errors import OrchestratorError, UsageError
from ccorch.plan import Milestone, Plan
from ccorch.state import STATE_DIR, MilestoneState, StateStore, update

if TYPE_CHECKING:
    from advanced import WorktreeManager

log = logging.getLogger("orchestrator")


def runtime_patterns(cfg: Config) -> list[str]:
    """What the runner and its agents write in a checkout, kept out of git (.git/info/exclude)."""
    folders = (cfg.worktree_dir, STATE_DIR, cfg.logging.log_dir)
    presets = {cfg.agent.preset, *([cfg.review.agent.preset] if cfg.review.agent else [])}
    return [f"/{f.strip('/')}/" for f in folders] + [p for x in sorted(presets) for p in agents.OWN_FILES.get(x, ())]


def reconcile(plan: Plan, store: StateStore, merged: dict[str, str]) -> None:
    """Milestone: trailers on the base branch say what is merged; a record that disagrees follows them."""
    records = store.milestones()
    for m in plan.milestones:
        rec = records.get(m.id) or MilestoneState(id=m.id, stage=m.stage, title=m.title)
        if m.id in merged and rec.status != "merged":
            store.put(update(rec, status="merged", merge_commit=merged[m.id], reason="", agent_pid=0))
        elif m.id not in merged and rec.status == "merged":
            store.put(update(rec, status="pending", merge_commit=""))  # the merge was undone


def refuse_plain_run_after_interrupt(store: StateStore, resume: bool) -> None:
    if resume:
        return
    unfinished = [r.id for r in store.milestones().values() if r.status in ("running", "interrupted")]
    if unfinished and store.run().status in ("running", "interrupted"):
        raise UsageError(
            f"a previous run was interrupted ({', '.join(sorted(unfinished))} unfinished): continue it with "
            "--resume, or start over with `clean` (add --force to drop unmerged work)"
        )


def stop_orphans(store: StateStore, worktree_folder: Path, say: Callable[[str], None]) -> None:
    """Agents of a runner that died may still be writing: stop them before their worktrees are reused."""
    records = store.milestones().values()
    recorded = [orphans.Recorded(r.id, r.agent_pid, r.agent_started) for r in records]
    for orphan in orphans.find(recorded, worktree_folder):
        say(f"{orphan.milestone}: stopping agent pid {orphan.pid} left running by the previous run")
        orphans.stop(orphan)
    for rec in records:
        if rec.agent_pid:
            store.put(update(rec, agent_pid=0, agent_started=0.0))


def tidy(
    root: Path, cfg: Config, worktrees: WorktreeManager, merged_here: list[Milestone], say: Callable[[str], None]
) -> None:
    """What a runner killed mid-way leaves behind: its integration, worktrees of merged milestones, temp files."""
    for note in leftovers.repair(root, root / cfg.worktree_dir):
        say(f"notice: {note}")
    state_dir = root / STATE_DIR
    # stop requests were for that run
    safe_delete.remove_tree(state_dir / "control", root=root, allowed_under=state_dir)
    tasks = root / cfg.tasks_file
    for leftover in tasks.parent.glob(f".{tasks.name}.*.tmp"):  # render.write_atomic's, from a kill
        leftover.unlink(missing_ok=True)
    worktrees.drop_integration()
    git.prune_worktrees(root)
    branches = set(git.branches(root, "milestone/*"))
    if not cfg.keep_worktrees:
        remove_worktrees(root, worktrees, [m for m in merged_here if f"milestone/{m.id}" in branches])


def remove_worktrees(root: Path, worktrees: WorktreeManager, milestones: Iterable[Milestone]) -> None:
    """Merged milestones' worktrees and branches go; one that will not is logged, never fatal."""
    for m in milestones:
        try:
            worktrees.remove(m.id, delete_branch=True)
        except OrchestratorError as e:
            log.warning("could not remove the worktree of %s: %s", m.id, e)
    git.prune_worktrees(root)

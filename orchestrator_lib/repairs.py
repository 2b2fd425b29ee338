"""Start-up repairs: what a previous run (killed, crashed or interrupted) left behind, put right before work.

Git is the source of truth for what is merged; the state store is a cache brought in line with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator_lib import agents, git, launches, leftovers, orphans, safe_delete
from orchestrator_lib.config import Config
from orchestrator_lib.errors import OrchestratorError, UsageError
from orchestrator_lib.plan import Milestone, Plan
from orchestrator_lib.state import STATE_DIR, MilestoneState, StateStore, Status, update

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
        if m.id in merged and rec.status != Status.MERGED:
            store.put(update(rec, status=Status.MERGED, merge_commit=merged[m.id], reason="", agent_pid=0))
        elif m.id not in merged and rec.status == Status.MERGED:
            store.put(update(rec, status=Status.PENDING, merge_commit=""))  # the merge was undone


def refuse_plain_run_after_interrupt(store: StateStore, resume: bool) -> None:
    if resume:
        return
    unfinished = [r.id for r in store.milestones().values() if r.status in (Status.RUNNING, Status.INTERRUPTED)]
    if unfinished and store.run().status in ("running", "interrupted"):
        raise UsageError(
            f"a previous run was interrupted ({', '.join(sorted(unfinished))} unfinished): continue it with "
            "--resume, or start over with `clean` (add --force to drop unmerged work)"
        )


def stop_orphans(store: StateStore, worktree_folder: Path, say: Callable[[str], None]) -> None:
    """Agents of a runner that died: those a resumed milestone takes over run on, the others are stopped."""
    records = store.milestones().values()
    recorded = [orphans.Recorded(r.id, r.agent_pid, r.agent_started) for r in records]
    adoptable = adoptable_agents(store)
    for orphan in orphans.find(recorded, worktree_folder):
        if orphan.pid in adoptable:
            if adoptable[orphan.pid]:
                say(f"{orphan.milestone}: agent pid {orphan.pid} of the previous run runs on; taking it over")
            continue
        say(f"{orphan.milestone}: stopping agent pid {orphan.pid} left running by the previous run")
        orphans.stop(orphan)
    for rec in records:
        if rec.agent_pid:
            store.put(update(rec, agent_pid=0, agent_started=0.0))


def adoptable_agents(store: StateStore) -> dict[int, bool]:
    """Pids of the agents (True) and wrappers (False) a resumed milestone will take over (orchestrator_lib.launches)."""
    records = store.milestones()
    found: dict[int, bool] = {}
    for path, launch in launches.all_launches(store.path.parent / launches.AGENTS_DIR):
        rec = records.get(launch.milestone)
        if launch.role in launches.NOT_ADOPTED or (rec is not None and not _resumes(rec, launch.launched_at)):
            continue
        status = launches.settle(path, launch)
        if status is not None and launches.is_running(status):
            found.update({status.wrapper_pid: False, status.agent_pid: True})
    return found


def _resumes(rec: MilestoneState, launched_at: float) -> bool:
    """A launch belongs to the milestone's unfinished run (as orchestrator_lib.pipeline takes launches over)."""
    if rec.status == "merged":
        return False
    return rec.status in ("running", "interrupted", "pending") or launched_at > rec.finished_at


def forget_launches(root: Path, merged: Iterable[str]) -> None:
    """A merged milestone's agents are never taken over again."""
    for mid in merged:
        launches.clear(root / STATE_DIR / launches.AGENTS_DIR, mid)


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
    forget_launches(root, [m.id for m in merged_here])
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
    worktrees.prune()

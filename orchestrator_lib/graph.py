"""The plan as a graph: readiness, waves, the critical path and who a failure blocks. Pure functions.

A milestone's Dependencies are its edges (plan.check_plan guarantees they point to earlier stages,
so the graph has no cycles). Dependencies mode (config `schedule`) starts a milestone as soon as
every dependency is merged; stages mode keeps the barrier, and both show these views in `plan`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

from orchestrator_lib.plan import Milestone

SCHEDULES = ("stages", "dependencies")


def order_key(m: Milestone) -> tuple[int, str]:
    """Ties go to the lower stage, then the lower id."""
    return (m.stage, m.id)


def waits_for(m: Milestone, merged: Collection[str]) -> tuple[str, ...]:
    """The dependencies of `m` not merged yet, in the order the file lists them."""
    return tuple(d for d in m.dependencies if d not in merged)


def ready(pending: Iterable[Milestone], merged: Collection[str]) -> list[Milestone]:
    """The pending milestones whose every dependency is merged, lower stage then lower id first."""
    return sorted((m for m in pending if not waits_for(m, merged)), key=order_key)


def dependents(milestones: Sequence[Milestone], failed: str) -> list[str]:
    """Every milestone that depends on `failed`, directly or through others, in plan order."""
    hit = {failed}
    changed = True
    while changed:  # the plan is small: a fixpoint is clearer than a topological walk
        changed = False
        for m in milestones:
            if m.id not in hit and hit.intersection(m.dependencies):
                hit.add(m.id)
                changed = True
    return [m.id for m in sorted(milestones, key=order_key) if m.id in hit and m.id != failed]


def failed_roots(milestones: Sequence[Milestone], blocked: str, failed: Collection[str]) -> list[str]:
    """The failed milestones `blocked` waits for, directly or not, in id order."""
    by_id = {m.id: m for m in milestones}
    roots: set[str] = set()
    todo, seen = [blocked], {blocked}
    while todo:
        m = by_id.get(todo.pop())
        for dep in m.dependencies if m else ():
            if dep in failed:
                roots.add(dep)
            elif dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(roots)


def blocked_reason(roots: Sequence[str]) -> str:
    """The reason a milestone is blocked by failures: "waits for 1B, which failed"."""
    if len(roots) == 1:
        return f"waits for {roots[0]}, which failed"
    return f"waits for {', '.join(roots)}, which failed"


def waves(milestones: Sequence[Milestone], merged: Collection[str] = ()) -> list[list[Milestone]]:
    """The not-merged milestones in waves: wave 1 can start now, wave n once wave n-1 has merged.

    A milestone's wave is one more than the latest wave among its unmerged dependencies.
    """
    pending = [m for m in milestones if m.id not in merged]
    level: dict[str, int] = {}
    for m in sorted(pending, key=order_key):  # dependencies are on earlier stages: already levelled
        level[m.id] = 1 + max((level.get(d, 0) for d in m.dependencies if d not in merged), default=0)
    count = max(level.values(), default=0)
    return [sorted((m for m in pending if level[m.id] == n), key=order_key) for n in range(1, count + 1)]


class CriticalPath(NamedTuple):
    ids: tuple[str, ...]
    minutes: int  # the sum of their Estimated Time (a milestone without one counts 0)


def critical_path(milestones: Sequence[Milestone], merged: Collection[str] = ()) -> CriticalPath:
    """The chain of unmerged milestones with the longest total Estimated Time; ties to lower ids."""
    pending = {m.id: m for m in milestones if m.id not in merged}
    best: dict[str, CriticalPath] = {}
    for m in sorted(pending.values(), key=order_key):
        before = sorted((best[d] for d in m.dependencies if d in best), key=lambda p: p.ids)
        longest = max(before, key=_length, default=CriticalPath((), 0))  # the first wins a tie
        best[m.id] = CriticalPath((*longest.ids, m.id), longest.minutes + (m.estimate_minutes or 0))
    return max(best.values(), key=_length, default=CriticalPath((), 0))


def _length(path: CriticalPath) -> tuple[int, int]:
    # Without estimates the longest chain of milestones is still the critical one.
    return (path.minutes, len(path.ids))


def stage_minutes(milestones: Sequence[Milestone], merged: Collection[str] = ()) -> int:
    """Stages mode's estimate: each stage takes as long as its longest milestone."""
    pending = [m for m in milestones if m.id not in merged]
    stages = sorted({m.stage for m in pending})
    return sum(max(m.estimate_minutes or 0 for m in pending if m.stage == s) for s in stages)


def waiting(milestones: Sequence[Milestone], statuses: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """For each milestone not started (pending or blocked): the dependencies it still waits for."""
    merged = {mid for mid, status in statuses.items() if status == "merged"}
    return {
        m.id: found
        for m in milestones
        if statuses.get(m.id, "pending") in ("pending", "blocked") and (found := waits_for(m, merged))
    }

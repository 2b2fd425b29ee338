"""The live dashboard (`watch`): progress, stages, milestones, the usage-limit banner. Uses rich."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ccorch import render

STYLES = {
    "pending": "dim",
    "running": "bold cyan",
    "done": "green",
    "merged": "bold green",
    "failed": "bold red",
    "blocked": "red",
    "interrupted": "yellow",
}


def frame(snap: render.Snapshot) -> Group:
    merged = sum(m.status == "merged" for m in snap.milestones)
    total = len(snap.milestones) or 1
    parts: list[object] = [
        Text(f"Claude Code Orchestrator · run {snap.run.status} · {merged}/{len(snap.milestones)} merged"),
        ProgressBar(total=total, completed=merged, width=50),
    ]
    banner = render.pause_banner(snap.run, snap.now)
    if banner:
        parts.append(Text(f"⏸ {banner}", style="bold yellow"))
    if snap.run.hold_reason:
        parts.append(Text(f"holding new agent starts: {snap.run.hold_reason}", style="yellow"))
    table = Table(expand=True)
    for column in (
        "Stage",
        "ID",
        "Title",
        "Status",
        "Elapsed / est.",
        "Attempt",
        "Review",
        "PID",
        "Cost",
        "Last output",
    ):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "Last output")
    for m in snap.milestones:
        table.add_row(
            str(m.stage),
            m.id,
            m.title[:30],
            Text(
                m.status + (f" ({m.role})" if m.status == "running" and m.role else ""), style=STYLES.get(m.status, "")
            ),
            _elapsed(m, snap),
            str(m.attempts or ""),
            str(m.review_rounds or ""),
            str(m.agent_pid or ""),
            f"${m.cost_usd:.2f}" if m.cost_usd else "",
            (m.last_line or m.reason.splitlines()[0] if m.reason else m.last_line)[:80],
        )
    parts.append(table)
    return Group(*parts)  # type: ignore[arg-type]


def _elapsed(m: render.MilestoneState, snap: render.Snapshot) -> str:
    if not m.started_at:
        return ""
    end = m.finished_at if m.finished_at and m.status != "running" else snap.now
    est = snap.estimates.get(m.id)
    return render.format_duration(end - m.started_at) + (f" / {render.format_duration(est * 60)}" if est else "")


def watch(snapshot: Callable[[], render.Snapshot], refresh: float, once: bool, no_color: bool) -> int:
    console = Console(no_color=not render.use_color(no_color), highlight=False)
    if once:
        console.print(frame(snapshot()))
        return 0
    with Live(frame(snapshot()), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(max(0.2, refresh))
                live.update(frame(snapshot()))
        except KeyboardInterrupt:
            return 0

"""The operator's view, rendered with rich: `status` lines and the live `watch` dashboard.

Both read a Snapshot (plan + state + git) and never write anything. Colour only on a
terminal, and never with NO_COLOR or --no-color: then no escape codes at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator_lib import denials, render
from orchestrator_lib.budget import HOLDING
from orchestrator_lib.errors import OrchestratorError
from orchestrator_lib.state import MilestoneState

STYLES = {
    "pending": "dim",
    "running": "bold cyan",
    "done": "green",
    "merged": "bold green",
    "failed": "bold red",
    "blocked": "red",
    "interrupted": "yellow",
}
BANNER_STYLE = "bold black on yellow"
GATED_ROLES = ("prepare", "implement", "review", "remediate", "resolve")  # an agent start comes next


def make_console(no_color: bool, stream: IO[str] | None = None) -> Console:
    colour = render.use_color(no_color, stream)
    return Console(file=stream, color_system="auto" if colour else None, highlight=False, emoji=False)


# ---------------------------------------------------------------- pieces shared by status and watch


def headline(snap: render.Snapshot) -> str:
    merged = sum(m.status == "merged" for m in snap.milestones)
    run = snap.run.status + (f" (pid {snap.run.pid})" if snap.run.status == "running" and snap.run.pid else "")
    text = f"{merged}/{len(snap.milestones)} merged · run {run}"
    cost = sum(m.cost_usd for m in snap.milestones)
    tokens = sum(m.input_tokens + m.output_tokens for m in snap.milestones)
    return text + (f" · cost ${cost:.2f} · {tokens:,} tokens" if cost or tokens else "")


def notices(snap: render.Snapshot) -> list[Text]:
    """The usage-limit banner (reset time and countdown), a resource hold, a failed run's message."""
    lines = []
    banner = render.pause_banner(snap.run, snap.now)
    if banner:
        hold = snap.run.pause_reason.startswith(HOLDING)  # the banner is the reason
        reason = f" · {snap.run.pause_reason}" if snap.run.pause_reason and not hold else ""
        lines.append(Text(f" ⏸ {banner}{reason} ", style=BANNER_STYLE))
    if render.budget_line(snap):
        lines.append(Text(render.budget_line(snap)))
    if snap.run.hold_reason:
        lines.append(Text(f" ⚠ holding new agent starts: {snap.run.hold_reason} ", style="bold yellow"))
    if snap.run.message and snap.run.status != "running":
        lines.append(Text(snap.run.message.splitlines()[0][:200], style="yellow"))
    return lines


def elapsed(m: MilestoneState, now: float) -> str:
    seconds = render.elapsed_seconds(m, now)
    return "" if seconds is None else render.format_duration(seconds)


def estimate(minutes: int | None) -> str:
    if not minutes:
        return ""
    return render.format_minutes(minutes)


def over_estimate(m: MilestoneState, snap: render.Snapshot) -> bool:
    minutes, seconds = snap.estimates.get(m.id), render.elapsed_seconds(m, snap.now)
    return bool(minutes and seconds and seconds > minutes * 60)


def status_word(m: MilestoneState, snap: render.Snapshot) -> Text:
    doing = activity(m, snap)
    where = f"on {short_node(m.node)}" if m.node and m.status == "running" else ""  # a Ray node (executor)
    said = " ".join(part for part in (doing, where) if part)
    return Text(m.status + (f" ({said})" if said else ""), style=STYLES.get(m.status, ""))


def activity(m: MilestoneState, snap: render.Snapshot) -> str:
    """What a running milestone is doing: its role, or what its next agent start waits for."""
    if m.status != "running":
        return ""
    if not m.agent_pid and m.role in GATED_ROLES:
        if snap.run.paused_until > snap.now:
            return "waits: usage hold" if snap.run.pause_reason.startswith(HOLDING) else "waits: usage limit"
        if snap.run.hold_reason:
            return "waits: resources"
    return m.role


def short_node(node: str) -> str:
    """A Ray node id (56 hex digits) by its first 8, as Ray's own tools show it; "" on this machine."""
    return node[:8]


def note(m: MilestoneState, snap: render.Snapshot | None = None) -> str:
    """The one line worth reading: what the agent said last, why it failed, or what it waits for."""
    if m.status in ("failed", "blocked", "interrupted") and m.reason:
        return m.reason.splitlines()[0]
    if snap is not None and m.id in snap.waiting:
        return render.waits_text(snap.waiting[m.id])
    return m.last_line if m.status == "running" else ""


# ---------------------------------------------------------------- `status`


def status_text(snap: render.Snapshot) -> Text:
    out = Text(f"Progress: {headline(snap)}")
    for line in notices(snap):
        out.append("\n")
        out.append_text(line)
    out.append("\n")
    out.append_text(milestone_lines(snap))
    return out


def milestone_lines(snap: render.Snapshot) -> Text:
    out = Text()
    for stage in sorted({m.stage for m in snap.milestones}):
        out.append(f"{chr(10) if out else ''}Stage {stage}", style="bold")
        for m in (m for m in snap.milestones if m.stage == stage):
            out.append_text(_status_line(m, snap))
    return out


def _status_line(m: MilestoneState, snap: render.Snapshot) -> Text:
    title = m.title[:24]
    line = Text(f"\n  {m.id} {title} {'.' * max(2, 28 - len(m.id) - len(title))} ")
    line.append_text(status_word(m, snap))
    details = _details(m, snap)
    if details:
        line.append(f"  {' · '.join(details)}", style="dim" if m.status == "pending" else "")
    text = note(m, snap)
    if text:
        line.append(f"\n      └ {text[:160]}", style="red" if m.status in ("failed", "blocked") else "dim")
    if m.permission_denials:
        line.append(f"\n      └ {denials.summary(m.permission_denials)[:300]}", style="yellow")
    return line


def _details(m: MilestoneState, snap: render.Snapshot) -> list[str]:
    est = estimate(snap.estimates.get(m.id))
    spent = elapsed(m, snap.now)
    parts = [f"{spent} / {est}" if spent and est else spent or (f"~{est}" if est else "")]
    if m.attempts:
        parts.append(f"attempt {m.attempts}")
    if m.review_rounds:
        parts.append(f"review {m.review_rounds}")
    if m.agent_pid and m.status == "running":
        parts.append(f"pid {m.agent_pid}")
    if m.node:
        parts.append(f"node {short_node(m.node)}")
    if m.cost_usd or render.milestone_cap(m, snap) is not None:
        parts.append(render.spend(m, snap))
    return [p for p in parts if p]


# ---------------------------------------------------------------- `watch`

COLUMNS = ("ID", "Title", "Status", "Elapsed / est.", "Attempt", "Review", "PID", "Cost", "Last output")
NARROW = 110
MIN_WIDTHS = {"ID": 8, "Title": 10, "Status": 12, "Elapsed / est.": 9, "PID": 5, "Cost": 5}


def frame(snap: render.Snapshot, footer: str = "", width: int = 160) -> Group:
    """The dashboard; below NARROW columns the table would crop, so the milestones come as lines."""
    merged = sum(m.status == "merged" for m in snap.milestones)
    total = len(snap.milestones)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=total or 1, completed=merged, width=40),
        Text(f"{merged}/{total} merged ({100 * merged // (total or 1)}%)"),
    )
    parts: list[RenderableType] = [Text(f"Claude Code Orchestrator · {headline(snap)}", style="bold"), bar]
    parts += notices(snap)
    parts.append(_table(snap) if width >= NARROW else milestone_lines(snap))
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


def _table(snap: render.Snapshot) -> Table:
    """One table, a header row per stage, so the columns line up across stages."""
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    for name in COLUMNS:
        table.add_column(
            name,
            no_wrap=True,
            overflow="ellipsis",
            max_width=32 if name == "Title" else None,
            min_width=MIN_WIDTHS.get(name),
            ratio=1 if name == "Last output" else None,
        )
    stages = sorted({m.stage for m in snap.milestones})
    for stage in stages:
        rows = [m for m in snap.milestones if m.stage == stage]
        merged = sum(m.status == "merged" for m in rows)
        cost = sum(m.cost_usd for m in rows)
        summary = f"{merged}/{len(rows)} merged" + (f" · ${cost:.2f}" if cost else "")
        table.add_row(Text(f"Stage {stage}", style="bold"), Text(summary, style="bold"))
        for m in rows:
            table.add_row(*_cells(m, snap), end_section=m is rows[-1] and stage != stages[-1])
    return table


def _cells(m: MilestoneState, snap: render.Snapshot) -> tuple[RenderableType, ...]:
    est = estimate(snap.estimates.get(m.id))
    spent = elapsed(m, snap.now)
    return (
        f"  {m.id}",
        m.title,
        status_word(m, snap),
        Text(f"{spent or '-'} / {est}" if est else spent, style="yellow" if over_estimate(m, snap) else ""),
        str(m.attempts or ""),
        str(m.review_rounds or ""),
        str(m.agent_pid) if m.agent_pid and m.status == "running" else "",
        render.spend(m, snap),
        Text(note(m, snap), style="red" if m.status in ("failed", "blocked") else ""),
    )


def watch(snapshot: Callable[[], render.Snapshot], refresh: float, once: bool, no_color: bool) -> int:
    console = make_console(no_color)
    if once:
        console.print(frame(snapshot(), width=console.width))
        return 0
    show = _Frames(snapshot, refresh, console)
    try:
        if not console.is_terminal:  # a pipe or a file: one frame after another, no cursor tricks
            while True:
                console.print(show.next())
                time.sleep(refresh)
        with Live(show.next(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(refresh)
                live.update(show.next(), refresh=True)
    except KeyboardInterrupt:
        return 0


class _Frames:
    """The next frame; when the state cannot be read for a moment, the last good one with the reason."""

    def __init__(self, snapshot: Callable[[], render.Snapshot], refresh: float, console: Console) -> None:
        self._snapshot = snapshot
        self._refresh = refresh
        self._console = console
        self._last: render.Snapshot | None = None

    def next(self) -> RenderableType:
        footer = f"updated {time.strftime('%H:%M:%S')} · every {self._refresh:g}s · Ctrl-C quits"
        try:
            self._last = self._snapshot()
        except OrchestratorError as e:
            if self._last is None:
                raise
            footer = f"cannot read the state right now, showing the last view: {e}"
        return frame(self._last, footer, self._console.width)

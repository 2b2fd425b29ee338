"""The commands besides `run`: status, clean, demo, plan, logs, stop, watch, serve; draft and new."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib import (
    agents,
    conflicts,
    dashboard,
    envfile,
    files,
    git,
    graph,
    milestone_agent,
    prompts,
    redact,
    render,
    safe_delete,
    server,
    transcript,
    worktree_prep,
)
from orchestrator_lib.cli import program_name
from orchestrator_lib.config import CONFIG_FILE, config_path, load_config, replace
from orchestrator_lib.errors import EXIT_OK, EXIT_USAGE, OrchestratorError, UsageError
from orchestrator_lib.lock import RunLock, holder_alive, read_holder
from orchestrator_lib.plan import load_plan, milestone_id_problem, not_in_plan
from orchestrator_lib.state import STATE_DIR, MilestoneState, Ownership, RunState, StateStore, update

HERE = Path(__file__).resolve().parent.parent
# The example plan is the checkout's milestones/; an installed package carries it as orchestrator_lib/example.
EXAMPLE_PLANS = (Path(__file__).resolve().with_name("example"), HERE / "milestones")


class _View:
    """Plan + state + git, read-only: what status, plan, watch and serve show."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.root = git.find_root(Path(getattr(args, "project", None) or ".").resolve())
        explicit = bool(args.config or os.environ.get("ORCHESTRATOR_CONFIG"))
        self.config_file = config_path(self.root, args.config, os.environ)
        self.config = load_config(self.config_file, os.environ, explicit)
        if getattr(args, "schedule", None):  # `run --whatif --schedule …`, `plan --schedule …`
            self.config = replace(self.config, schedule=args.schedule)
        self.plan, self.problems = load_plan(self.root / self.config.milestones_dir, self.root)
        self.problems += milestone_agent.plan_problems(self.plan, self.config, self.root, str(self.config_file))

    def records(self) -> tuple[dict[str, MilestoneState], RunState]:
        store = StateStore.open(self.root, readonly=True)
        if store is None:
            return {}, RunState()
        try:
            return self._with_git_truth(store.milestones()), store.run()
        finally:
            store.close()

    def snapshot(self) -> render.Snapshot:
        records, run = self.records()
        if run.status == "running" and not _runner_alive(self.root):
            run = dataclasses.replace(run, status="interrupted")
        if run.status != "running":
            run = dataclasses.replace(run, hold_reason="")  # a resource hold ends with its run
        agents = milestone_agent.summaries(self.plan, self.config)
        return render.snapshot(self.plan, records, run, caps=self.config.budget, agents=agents)

    def _with_git_truth(self, records: dict[str, MilestoneState]) -> dict[str, MilestoneState]:
        base = self.config.base_branch or git.current_branch(self.root) or "HEAD"
        merged = git.milestone_trailers(self.root, base)
        out = dict(records)
        for m in self.plan.milestones:
            rec = out.get(m.id) or MilestoneState(id=m.id, stage=m.stage, title=m.title)
            if m.id in merged:
                out[m.id] = update(rec, status="merged", merge_commit=merged[m.id])
        return out


def _runner_alive(root: Path) -> bool:
    holder = read_holder(root / STATE_DIR / "lock")
    return holder is not None and holder_alive(holder)


def status(args: argparse.Namespace) -> int:
    view = _View(args)
    snap = view.snapshot()
    if args.json:
        print(json.dumps(render.status_json(snap), indent=2))
        return EXIT_OK
    for problem in view.problems:
        print(f"warning: {problem}", file=sys.stderr)
    dashboard.make_console(args.no_color).print(dashboard.status_text(snap), soft_wrap=True)
    return EXIT_OK


def clean(args: argparse.Namespace) -> int:
    """Remove the runner's own worktrees and branches (recorded when it made them); nothing else."""
    view = _View(args)
    if _runner_alive(view.root):
        raise UsageError("a run is going in this project; stop it first (`python orchestrator.py stop`)")
    base = view.config.base_branch or git.current_branch(view.root) or "HEAD"
    if not git.has_commits(view.root):
        print("removed: nothing (the repository has no commits yet)")
        return EXIT_OK
    if git.rev_parse(view.root, base) is None:
        raise UsageError(f"base branch `{base}` does not exist: check base_branch in the config, or make a commit")
    wt_dir = view.root / view.config.worktree_dir
    plan = _clean_plan(view.root, base, wt_dir, args.force)
    if not args.dry_run:
        plan = _carry_out(view.root, plan, wt_dir, lambda branch, path: _tear_down(view, branch, path))
        git.prune_worktrees(view.root)
    _print_clean(plan, args.dry_run)
    if args.state and not args.dry_run:
        _forget_state(view.root)
    elif args.state:
        print("would forget the state (.orchestrator/state.db); merged work is read back from git")
    if args.dry_run:
        print(f"dry run: nothing was changed (base branch {base})")
    return EXIT_OK


class _Cleaning(NamedTuple):
    remove: list[tuple[str, Path | None]]  # (branch, its worktree of ours to remove first)
    kept: list[str]  # "branch (reason)": ours, but holding work or checked out elsewhere
    not_ours: list[str]


def _clean_plan(root: Path, base: str, wt_dir: Path, force: bool) -> _Cleaning:
    owned = Ownership(root)
    ours, our_worktrees = set(owned.names("branch")), set(owned.names("worktree"))
    plan = _Cleaning([], [], [])
    for branch, merged in git.runner_branches(root, base, ("milestone/", "orchestrator/"), extra=ours):
        if branch not in ours:
            plan.not_ours.append(branch)
            continue
        path = git.worktree_of_branch(root, branch)
        if path is not None and (str(path.resolve()) not in our_worktrees or not _inside(path, wt_dir)):
            plan.kept.append(f"{branch} (checked out at {path}; not a worktree of the runner's)")
        elif not merged and not force:
            plan.kept.append(f"{branch} (unmerged commits; `clean --force` drops them)")
        elif path is not None and path.exists() and git.status_paths(path) and not force:
            plan.kept.append(f"{branch} (uncommitted changes in {path}; `clean --force` drops them)")
        else:
            plan.remove.append((branch, path))
    return plan


def _carry_out(root: Path, plan: _Cleaning, wt_dir: Path, tear_down: Callable[[str, Path], None]) -> _Cleaning:
    """Remove what the plan says; a git refusal keeps that branch (with git's reason), never a traceback."""
    owned = Ownership(root)
    removed: list[tuple[str, Path | None]] = []
    kept = list(plan.kept)
    for branch, path in plan.remove:
        try:
            if path is not None:
                tear_down(branch, path)  # worktree.teardown, before the worktree goes
                safe_delete.remove_worktree(root, path, allowed_under=wt_dir)
                owned.drop("worktree", str(path.resolve()))
            git.delete_branch(root, branch, force=True)
        except OrchestratorError as e:
            kept.append(f"{branch} ({str(e).splitlines()[-1].strip()})")
            continue
        owned.drop("branch", branch)
        removed.append((branch, path))
    return _Cleaning(removed, kept, plan.not_ours)


def _print_clean(plan: _Cleaning, dry_run: bool) -> None:
    names = ", ".join(b + (f" and its worktree {p}" if p else "") for b, p in plan.remove)
    print(f"{'would remove' if dry_run else 'removed'}: {names or 'nothing'}")
    for line in plan.kept:
        print(f"kept: {line}")
    if plan.not_ours:
        print(f"not ours, kept: {', '.join(plan.not_ours)} (the runner did not make them)")


def _tear_down(view: _View, branch: str, path: Path) -> None:
    """worktree.teardown, in the task's environment, before its worktree goes; a failure is reported."""
    if not view.config.worktree.teardown:
        return
    name = worktree_prep.INTEGRATION if branch.startswith("orchestrator/") else branch.rsplit("/", 1)[-1]
    secrets = envfile.read_dotenv(view.root)
    log_dir = view.root / view.config.logging.log_dir
    preparer = worktree_prep.Preparer(
        view.root, view.config.worktree, view.config_file, {**os.environ, **secrets}, log_dir, lambda: view.records()[0]
    )
    failure = preparer.teardown(name, path)
    if failure:
        print(f"{name}: {failure}", file=sys.stderr)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _forget_state(root: Path) -> None:
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (root / STATE_DIR / name).unlink(missing_ok=True)
    safe_delete.remove_tree(root / STATE_DIR / "prompts", root=root, allowed_under=root / STATE_DIR)
    safe_delete.remove_tree(root / STATE_DIR / "agents", root=root, allowed_under=root / STATE_DIR)
    print("state forgotten; merged work is read back from git")


def demo(args: argparse.Namespace, run_main: Callable[[list[str]], int]) -> int:
    """The example plan, a scratch repository and the built-in offline agent: no account needed.
    run_main is the command line's main (passed down: this module sits below orchestrator.py)."""
    target = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty; pick an empty or new folder for the demo")
    _make_demo_repo(target)
    print(f"demo repository: {target}\n")
    started = time.monotonic()
    code = run_main(["run", "--project", str(target), *(["--no-color"] if args.no_color else [])])
    print(f"\n--- finished in {time.monotonic() - started:.1f}s with exit code {code}; {target}/TASKS.md says:\n")
    print((target / "TASKS.md").read_text(encoding="utf-8"))
    print(git.git(target, "log", "--graph", "--oneline", "--decorate", "-n", "20").stdout)
    print(f"Look around: cd {target} && {_invocation()} status")
    return code


def _invocation() -> str:
    name = program_name()
    if name == "orchestrator.py":
        return f"{sys.executable} {HERE / 'orchestrator.py'}"
    return name.replace("python", sys.executable, 1)


def example_plan() -> Path:
    found = next((p for p in EXAMPLE_PLANS if p.is_dir()), None)
    if found is None:
        raise OrchestratorError(f"the example plan is missing (looked in {', '.join(map(str, EXAMPLE_PLANS))})")
    return found


def _make_demo_repo(target: Path) -> None:
    plan = example_plan()
    target.mkdir(parents=True, exist_ok=True)
    git.git(target, "init", "-q", "-b", "main")
    shutil.copytree(plan, target / "milestones")
    (target / "README.md").write_text("# textstats\n\nA demo project built by Claude Code Orchestrator.\n")
    config = {"max_parallel_tasks": 4, "agent": {"preset": "demo"}, "review": {"enabled": True}}
    (target / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    git.git(target, "add", "-A")
    git.git(target, "commit", "-q", "-m", "Start the demo project")


def plan(args: argparse.Namespace) -> int:
    view = _View(args)
    for problem in view.problems:
        print(f"problem: {problem}", file=sys.stderr)
    wanted = getattr(args, "milestone", None)
    if wanted:
        return _print_prompt(view, wanted)
    print("\n".join(_plan_lines(view)))
    return EXIT_USAGE if view.problems else EXIT_OK


def _plan_lines(view: _View) -> list[str]:
    cfg, snap = view.config, view.snapshot()
    by_id = {m.id: m for m in snap.milestones}
    merged = sum(m.status == "merged" for m in snap.milestones)
    review = f"on, up to {cfg.review.max_rounds} round(s)" if cfg.review.enabled else "off"
    lines = [
        f"Plan: {len(view.plan.milestones)} milestone(s) in {len(view.plan.stages())} stage(s), {merged} merged "
        "(nothing is run by this command)",
        f"schedule: {cfg.schedule}" + _SCHEDULE_NOTES[cfg.schedule],
        f"agent: {' '.join(_sample_argv(view))}",
        f"review: {review}" + (f" by {cfg.review.agent.preset}" if cfg.review.agent else ""),
        f"base branch: {cfg.base_branch or git.current_branch(view.root)}",
        "",
    ]
    for stage in view.plan.stages():
        milestones = view.plan.in_stage(stage)
        longest = max((m.estimate_minutes or 0 for m in milestones), default=0)
        together = f"{len(milestones)} in parallel, up to {cfg.max_parallel_tasks} at once"
        lines.append(
            f"Stage {stage} ({together if len(milestones) > 1 else '1 milestone'})"
            + (f" ~{render.format_minutes(longest)}" if longest else "")
        )
        for m in milestones:
            state = by_id[m.id]
            note = state.status + (f" {state.merge_commit[:10]}" if state.merge_commit else "")
            deps = f"  after {', '.join(m.dependencies)}" if m.dependencies else ""
            est = f"~{render.format_minutes(m.estimate_minutes)}" if m.estimate_minutes else "no estimate"
            lines.append(f"  {m.id:<4} {m.title[:40]:<40} {note:<18} {est:<8}{deps}".rstrip())
            lines.append(f"       agent: {milestone_agent.describe(milestone_agent.for_role(cfg, m, 'implement'))}")
    return lines + _graph_lines(view, snap) + _forecast_lines(view, snap)


_SCHEDULE_NOTES = {
    "stages": " (each stage starts once the stage before it has merged)",
    "dependencies": " (a milestone starts once its Dependencies are merged, and merges on its own)",
}


def _graph_lines(view: _View, snap: render.Snapshot) -> list[str]:
    """The plan as waves, and the critical path by Estimated Time (orchestrator_lib/graph.py)."""
    merged = {m.id for m in snap.milestones if m.status == "merged"}
    milestones = view.plan.milestones
    lines = ["", "Waves (a wave starts once the waves before it have merged what it depends on):"]
    for n, wave in enumerate(graph.waves(milestones, merged), start=1):
        lines.append(f"  wave {n}: {', '.join(m.id for m in wave)}")
    if len(lines) == 2:
        lines.append("  none: every milestone is merged")
    path = graph.critical_path(milestones, merged)
    if path.ids:
        total = f" ~{render.format_minutes(path.minutes)}" if path.minutes else " (no Estimated Time given)"
        lines.append(f"Critical path: {' -> '.join(path.ids)}{total}")
        staged = graph.stage_minutes(milestones, merged)
        if path.minutes or staged:
            lines.append(
                f"  dependencies mode needs ~{render.format_minutes(path.minutes)} of agent time end to end; "
                f"stages mode ~{render.format_minutes(staged)} (each stage waits for its longest milestone)"
            )
    return lines


def _forecast_lines(view: _View, snap: render.Snapshot) -> list[str]:
    """Which existing milestone branches will conflict when merged (git merge-tree; nothing is touched)."""
    base = view.config.base_branch or git.current_branch(view.root) or "HEAD"
    ready = [m for m in snap.milestones if m.status != "merged" and git.branch_exists(view.root, f"milestone/{m.id}")]
    if not ready or git.rev_parse(view.root, base) is None:
        return []
    if not conflicts.can_predict(view.root):
        return ["", "Merge forecast: needs git 2.38 or newer (git merge-tree --write-tree)"]
    dependencies = view.config.schedule == "dependencies"
    groups = [ready] if dependencies else [[m for m in ready if m.stage == s] for s in sorted({m.stage for m in ready})]
    lines = ["", f"Merge forecast (each branch as it is now, merged into {base} in this order):"]
    for group in groups:
        found = conflicts.forecast(view.root, base, [(m.id, f"milestone/{m.id}") for m in group])
        for mid in found.order:
            clash = found.conflicts.get(mid)
            lines.append(f"  {mid:<4} " + (f"will conflict in {', '.join(clash)}" if clash else "merges cleanly"))
    return lines


def _sample_argv(view: _View) -> tuple[str, ...]:
    inv = agents.build_invocation(
        view.config.agent,
        role="implement",
        milestone_id="<ID>",
        worktree=Path("<worktree>"),
        prompt="",
        prompt_file=Path("<prompt file>"),
        base_env={},
        extra_env={},
        resume_session=None,
    )
    return tuple("<new uuid>" if a == inv.session_id else a for a in inv.argv)


def _print_prompt(view: _View, milestone_id: str) -> int:
    plan, worktree = view.plan, view.root / view.config.worktree_dir / milestone_id
    m = plan.get(milestone_id)
    if m is None:
        raise UsageError(not_in_plan(plan, milestone_id))
    setting = _isolation(view, m.stage, milestone_id).note()
    sys.stdout.write(prompts.implement(m, str(worktree), setting=setting))  # exactly what the agent gets on stdin
    return EXIT_OK


def _isolation(view: _View, stage: int, milestone_id: str) -> worktree_prep.Isolation:
    """The port block and slug the milestone has, or gets when its stage runs next (as the runner assigns them)."""
    records, _ = view.records()
    recorded = records.get(milestone_id)
    if recorded is not None and recorded.port_base:
        return worktree_prep.isolation(milestone_id, recorded.port_base, view.config.worktree)
    todo = [m.id for m in view.plan.in_stage(stage) if m.id not in records or records[m.id].status != "merged"]
    if milestone_id not in todo:
        todo.append(milestone_id)
    ports = worktree_prep.assign_ports(worktree_prep.held_ports(records), todo, view.config.worktree)
    return worktree_prep.isolation(milestone_id, ports[milestone_id], view.config.worktree)


def logs(args: argparse.Namespace) -> int:
    view = _View(args)
    if view.plan.get(args.milestone) is None:
        raise UsageError(not_in_plan(view.plan, args.milestone, hint=milestone_id_problem(args.milestone) or ""))
    path = view.root / view.config.logging.log_dir / f"{args.milestone}.log"
    if not path.exists() and not args.follow:
        raise UsageError(f"no log for {args.milestone} yet ({path}); it appears when its agent starts")
    show = _raw_line if args.raw else transcript.readable
    if not args.follow:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                _print_line(show(line))
        return EXIT_OK
    try:
        _follow(path, show, lambda: _runner_alive(view.root))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following
    return EXIT_OK


def _raw_line(line: str) -> str:
    return line.rstrip("\n")


def _print_line(text: str | None) -> None:
    if text:
        print(redact.strip_controls(text), flush=True)  # an agent's escape codes never reach the terminal


def _follow(path: Path, show: Callable[[str], str | None], runner_alive: Callable[[], bool]) -> None:
    """Print the log as it grows, like `tail -f`; stop once a run that was going has ended."""
    seen_runner = runner_alive()
    while not path.exists():
        if seen_runner and not runner_alive():
            print(f"the run ended before {path.name} was written", file=sys.stderr)
            return
        seen_runner = seen_runner or runner_alive()
        time.sleep(0.3)
    pending = ""  # a line the agent has not finished writing yet
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                pending += line
                if pending.endswith("\n"):
                    _print_line(show(pending))
                    pending = ""
                continue
            alive = runner_alive()
            if seen_runner and not alive:
                for rest in (pending + f.read()).splitlines():  # what was written before it ended
                    _print_line(show(rest))
                print("(the run has ended)", file=sys.stderr)
                return
            seen_runner = seen_runner or alive
            time.sleep(0.3)


def stop(args: argparse.Namespace) -> int:
    view = _View(args)
    holder = read_holder(view.root / STATE_DIR / "lock")
    if holder is None or not holder_alive(holder):
        raise UsageError("no run is going in this project: nothing to stop")
    control = view.root / STATE_DIR / "control"
    files.private_dir(control)
    if args.milestone:
        _require_running(view, args.milestone)
        files.open_private(control / f"stop-{args.milestone}", "w").close()
        print(
            f'asked the runner to stop {args.milestone}; it fails with "stopped by user" while the others go on '
            f"(run it again later with `--milestone {args.milestone}`)"
        )
        return EXIT_OK
    files.open_private(control / "stop-all", "w").close()
    try:
        os.kill(int(holder["pid"]), signal.SIGTERM)
    except OSError:
        pass
    print(f"asked the runner (pid {holder['pid']}) to stop; agents get a grace period, state is saved")
    return EXIT_OK


def _require_running(view: _View, milestone_id: str) -> None:
    if view.plan.get(milestone_id) is None:
        raise UsageError(not_in_plan(view.plan, milestone_id))
    record = next(m for m in view.snapshot().milestones if m.id == milestone_id)
    if record.status != "running":
        raise OrchestratorError(f"{milestone_id} is not running (it is {record.status}); nothing to stop")


def watch(args: argparse.Namespace) -> int:
    if not args.refresh > 0:
        raise UsageError(f"--refresh must be more than 0 seconds, not {args.refresh:g}")
    view = _View(args)
    return dashboard.watch(view.snapshot, refresh=args.refresh, once=args.once, no_color=args.no_color)


def serve(args: argparse.Namespace) -> int:
    view = _View(args)
    return server.serve(view.snapshot, port=args.port)


__all__ = ["RunLock", "clean", "demo", "logs", "plan", "serve", "status", "stop", "watch"]

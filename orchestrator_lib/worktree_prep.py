"""Every worktree ready to build and test, isolated from its neighbours.

Before the agent sees a new worktree: the ignored files the user lists are copied from the
main checkout (`.worktreeinclude` and `worktree.copy`, git's pattern syntax), heavy folders
are symlinked (`worktree.link`, conditional on `worktree.link_if_unchanged` lockfiles), and
`worktree.setup` runs. Each task gets its own port block and slug. `worktree.teardown` runs
before a worktree is removed. Copied and linked paths are kept out of every commit through
the repository's info/exclude: git's `node_modules/` pattern does not match a *symlink*.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib import git, proc, redact
from orchestrator_lib.config import WorktreeConfig
from orchestrator_lib.errors import OrchestratorError
from orchestrator_lib.plan import Problem
from orchestrator_lib.state import MilestoneState

INCLUDE_FILE = ".worktreeinclude"
PORT_VAR = "ORCHESTRATOR_PORT_BASE"
SLUG_VAR = "ORCHESTRATOR_TASK_SLUG"
INTEGRATION = "_integration"
_SETUP_MARK = "orchestrator-setup-done"  # in the worktree's own git dir: gone with the worktree
_exclude_lock = threading.Lock()  # info/exclude is one file shared by every worktree


class Isolation(NamedTuple):
    slug: str
    port_base: int
    ports: int

    def env(self) -> dict[str, str]:
        return {PORT_VAR: str(self.port_base), SLUG_VAR: self.slug}

    def note(self) -> str:
        """What the agent is told, so its servers and databases do not collide with its neighbours'."""
        last = self.port_base + self.ports - 1
        return (
            f"Your task's own resources (set in your environment and in the checks' environment): "
            f"{SLUG_VAR}={self.slug} (name databases, containers and other shared resources with it), "
            f"{PORT_VAR}={self.port_base} (ports {self.port_base}-{last} are yours; tasks running in parallel "
            "have others). Start any server on one of these ports."
        )


def slug_for(task_id: str) -> str:
    """`1A` -> `m1a`: lower-case letters, digits and underscores, starting with a letter."""
    slug = re.sub(r"[^a-z0-9_]", "_", task_id.lower()).strip("_") or "task"
    return slug if slug[0].isalpha() else f"m{slug}"


# ---------------------------------------------------------------- ports


def assign_ports(held: Mapping[str, int], wanted: Sequence[str], w: WorktreeConfig) -> dict[str, int]:
    """A port block for each of `wanted`. A block recorded earlier (`held`) is kept while it overlaps
    no other; the rest get the lowest free block. Blocks held by other tasks are never shared."""
    taken = [base for mid, base in held.items() if base and mid not in wanted]
    result: dict[str, int] = {}
    for mid in wanted:
        base = held.get(mid, 0)
        if base and not _overlaps(base, taken, w.ports_per_task):
            result[mid] = base
            taken.append(base)
    for mid in wanted:
        if mid not in result:
            result[mid] = _lowest_free(taken, w)
            taken.append(result[mid])
    return result


def _overlaps(base: int, taken: Sequence[int], size: int) -> bool:
    return any(base < other + size and other < base + size for other in taken)


def _lowest_free(taken: Sequence[int], w: WorktreeConfig) -> int:
    base = w.port_range_start
    while base + w.ports_per_task - 1 <= 65535:
        if not _overlaps(base, taken, w.ports_per_task):
            return base
        base += w.ports_per_task
    raise OrchestratorError(
        f"no free block of {w.ports_per_task} ports from worktree.port_range_start {w.port_range_start}; "
        "lower worktree.ports_per_task or worktree.port_range_start"
    )


def held_ports(records: Mapping[str, MilestoneState]) -> dict[str, int]:
    """Blocks recorded for milestones not merged yet: kept by a resumed run, avoided by others."""
    return {r.id: r.port_base for r in records.values() if r.port_base and r.status != "merged"}


def for_tasks(records: Mapping[str, MilestoneState], wanted: Sequence[str], w: WorktreeConfig) -> dict[str, Isolation]:
    """The isolation of each task about to run: recorded blocks kept, the others the lowest free."""
    ports = assign_ports(held_ports(records), wanted, w)
    return {mid: isolation(mid, ports[mid], w) for mid in wanted}


def isolation(task_id: str, port_base: int, w: WorktreeConfig) -> Isolation:
    return Isolation(slug_for(task_id), port_base, w.ports_per_task)


def integration_isolation(records: Mapping[str, MilestoneState], w: WorktreeConfig) -> Isolation:
    base = assign_ports(held_ports(records), [INTEGRATION], w)[INTEGRATION]
    return Isolation("integration", base, w.ports_per_task)


def isolation_of(name: str, records: Mapping[str, MilestoneState], w: WorktreeConfig) -> Isolation:
    """A task's recorded isolation (for its teardown); the integration's is computed afresh."""
    rec = records.get(name)
    if name == INTEGRATION or rec is None or not rec.port_base:
        base = assign_ports(held_ports(records), [name], w)[name]
        return Isolation("integration" if name == INTEGRATION else slug_for(name), base, w.ports_per_task)
    return isolation(name, rec.port_base, w)


# ---------------------------------------------------------------- what to copy


class Pattern(NamedTuple):
    text: str
    path: str  # where it was written: a file, or the config file
    line: int  # 0 for a config entry
    key: str = ""  # the config key, for a config entry


def include_patterns(root: Path, w: WorktreeConfig, config_file: Path) -> list[Pattern]:
    patterns = [Pattern(p, str(config_file), 0, f"worktree.copy[{n}]") for n, p in enumerate(w.copy)]
    include = root / INCLUDE_FILE
    if include.is_file():
        lines = include.read_text(encoding="utf-8", errors="replace").splitlines()
        for n, line in enumerate(lines, 1):
            text = line.rstrip("\r")
            if text.strip() and not text.startswith("#"):
                patterns.append(Pattern(text, str(include), n))
    return patterns


def pattern_problem(text: str) -> str | None:
    body = text[1:] if text.startswith("!") else text
    body = body.strip()
    if not body.strip("/"):
        return "an empty pattern matches nothing"
    if ".." in body.replace("\\", "/").split("/"):
        return "`..` cannot match a file of the repository; patterns are relative to its root"
    if re.search(r"(?<!\\)\[(?![^\]]*\])", body):
        return "an unclosed `[` (write `\\[` for a literal bracket)"
    return None


def files_to_copy(root: Path, patterns: Sequence[Pattern], skip: Sequence[str] = ()) -> list[str]:
    """Untracked files of the main checkout that match a pattern and that git ignores."""
    if not patterns:
        return []
    args = ["ls-files", "-z", "--others", "--ignored"]
    for p in patterns:
        args += ["-x", p.text]
    args += ["--", ".", *(f":(exclude){folder}" for folder in skip)]  # linked folders are not walked
    candidates = [f for f in git.git(root, *args).stdout.split("\0") if f and not _under(f, skip)]
    if not candidates:
        return []
    out = git.git(root, "check-ignore", "-z", "--stdin", check=False, stdin="\0".join(candidates))
    ignored = {f for f in out.stdout.split("\0") if f}
    return [f for f in candidates if f in ignored]


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


# ---------------------------------------------------------------- checking the section


def problems(root: Path, w: WorktreeConfig, config_file: Path) -> list[Problem]:
    """What --validate-only reports about the `worktree` section and .worktreeinclude."""
    found = []
    for p in include_patterns(root, w, config_file):
        message = pattern_problem(p.text)
        if message:
            where = f"`{p.key}` {p.text!r}" if p.key else f"pattern {p.text!r}"
            found.append(Problem(p.path, p.line, f"{where}: {message}"))
    for n, rel in enumerate(w.link):
        message = _link_problem(root, rel)
        if message:
            found.append(Problem(str(config_file), 0, f"`worktree.link[{n}]` {rel!r}: {message}"))
    for n, rel in enumerate(w.link_if_unchanged):
        if not _is_relative_inside(rel):
            message = f"`worktree.link_if_unchanged[{n}]` {rel!r}: must be a path inside the repository"
            found.append(Problem(str(config_file), 0, message))
    return found


def _is_relative_inside(rel: str) -> bool:
    return bool(rel.strip("/")) and not os.path.isabs(rel) and ".." not in Path(rel).parts


def _link_problem(root: Path, rel: str) -> str | None:
    if not _is_relative_inside(rel):
        return "must be a folder inside the repository, relative to its root"
    if not os.path.lexists(root / rel):
        return f"does not exist in the main checkout {root}; create it there first (run your setup once) or remove it"
    if git.git(root, "ls-files", "-z", "--", rel.rstrip("/")).stdout:
        return "is tracked by git: it comes with the branch, and linking it would share one copy between tasks"
    return None


# ---------------------------------------------------------------- preparing a worktree


class Prep(NamedTuple):
    root: Path  # the main checkout
    config: WorktreeConfig
    config_file: Path
    env: Mapping[str, str]  # the task's environment (with its isolation variables)
    log_file: Path  # the task's log: logs/<ID>.log
    stop: threading.Event | None = None

    def log(self, text: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", encoding="utf-8") as out:
            out.write(redact.active().mask(f"[orchestrator] {text}\n"))


class Preparer(NamedTuple):
    """Preps for the runner's own worktrees (the integration's, teardowns), named by task, logged to logs/<name>.log."""

    root: Path
    config: WorktreeConfig
    config_file: Path
    env: Mapping[str, str]  # the agents' environment (.env included)
    log_dir: Path
    records: Callable[[], Mapping[str, MilestoneState]]  # the state, for recorded port blocks
    stop: threading.Event | None = None

    def prep(self, name: str) -> Prep:
        env = {**self.env, **isolation_of(name, self.records(), self.config).env()}
        return Prep(self.root, self.config, self.config_file, env, self.log_dir / f"{name}.log", self.stop)

    def integration(self) -> Prep:
        return self.prep(INTEGRATION)

    def isolation(self, name: str = INTEGRATION) -> Isolation:
        return isolation_of(name, self.records(), self.config)

    def teardown(self, name: str, worktree: Path) -> str | None:
        return teardown(self.prep(name)._replace(stop=None), worktree)  # a teardown runs even when stopping


def prepare(p: Prep, worktree: Path) -> str | None:
    """Copy, link, then set up (once per worktree); the failure, with the command's output, or None."""
    try:
        _copy_and_link(p, worktree)
    except OSError as e:
        return f"cannot prepare the worktree {worktree}: {e}"
    if not p.config.setup or _setup_done(worktree):
        return None
    failure = run_commands(p, "setup", p.config.setup, worktree)
    if failure is None:
        (_git_dir(worktree) / _SETUP_MARK).write_text("done\n", encoding="utf-8")
    return failure


def _copy_and_link(p: Prep, worktree: Path) -> None:
    w = p.config
    links = [rel.rstrip("/") for rel in w.link]
    copied = files_to_copy(p.root, include_patterns(p.root, w, p.config_file), skip=links)
    _keep_out(worktree, [*links, *copied])
    for rel in copied:
        _copy(p.root, worktree, rel)
    if copied:
        p.log(f"copied {len(copied)} ignored file(s) from the main checkout: {', '.join(copied[:20])}")
    if links and lockfiles_unchanged(p.root, worktree, w):
        made = [rel for rel in links if _link(p.root, worktree, rel)]
        if made:
            p.log(f"linked {', '.join(made)} to the main checkout's")
    elif links:
        changed = _changed_lockfiles(p.root, worktree, w)
        p.log(f"not linking {', '.join(links)}: {changed} differs from the main checkout's")


def refresh_links(p: Prep, worktree: Path) -> str | None:
    """A lockfile the milestone changed: its links give way to the setup's fresh install."""
    w = p.config
    if not w.link_if_unchanged or lockfiles_unchanged(p.root, worktree, w):
        return None
    linked = [rel.rstrip("/") for rel in w.link if (worktree / rel.rstrip("/")).is_symlink()]
    if not linked:
        return None
    for rel in linked:
        (worktree / rel).unlink()  # the link only: the main checkout's folder is untouched
    changed = _changed_lockfiles(p.root, worktree, w)
    p.log(f"{changed} changed: {', '.join(linked)} no longer linked; running the setup for a fresh install")
    (_git_dir(worktree) / _SETUP_MARK).unlink(missing_ok=True)
    failure = run_commands(p, "setup", w.setup, worktree)
    if failure is None:
        (_git_dir(worktree) / _SETUP_MARK).write_text("done\n", encoding="utf-8")
    return failure


def teardown(p: Prep, worktree: Path) -> str | None:
    if not p.config.teardown or not worktree.is_dir():
        return None
    return run_commands(p, "teardown", p.config.teardown, worktree)


def lockfiles_unchanged(root: Path, worktree: Path, w: WorktreeConfig) -> bool:
    return not _changed_lockfiles(root, worktree, w)


def _changed_lockfiles(root: Path, worktree: Path, w: WorktreeConfig) -> str:
    return ", ".join(f for f in w.link_if_unchanged if _read(root / f) != _read(worktree / f))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _copy(root: Path, worktree: Path, rel: str) -> None:
    src, dst = root / rel, worktree / rel
    if os.path.lexists(dst) or not _inside(dst.parent, worktree):
        return  # already there (a resumed worktree), or behind a link: never write into the main checkout
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst)


def _inside(path: Path, folder: Path) -> bool:
    real = os.path.realpath(path)
    return real == os.path.realpath(folder) or real.startswith(os.path.realpath(folder) + os.sep)


def _link(root: Path, worktree: Path, rel: str) -> bool:
    src, dst = root / rel, worktree / rel
    if os.path.lexists(dst) or not os.path.lexists(src) or not _inside(dst.parent, worktree):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst, target_is_directory=True)
    return True


def _keep_out(worktree: Path, paths: Sequence[str]) -> None:
    """Anchored literal entries in info/exclude: a symlink is not matched by the user's `dir/` pattern."""
    if paths:
        with _exclude_lock:
            git.exclude(worktree, ["/" + _escape(p) for p in paths])


def _escape(path: str) -> str:
    text = re.sub(r"([\\*?\[])", r"\\\1", path)
    text = "\\" + text if text.startswith(("!", "#")) else text
    return text[:-1] + "\\ " if text.endswith(" ") else text


def _git_dir(worktree: Path) -> Path:
    return Path(git.git(worktree, "rev-parse", "--absolute-git-dir").stdout.strip())


def _setup_done(worktree: Path) -> bool:
    return (_git_dir(worktree) / _SETUP_MARK).exists()


def run_commands(p: Prep, kind: str, commands: Sequence[Sequence[str]], cwd: Path) -> str | None:
    """Each argv in order, output to the log (masked); the first failure, with its output, or None."""
    timeout = p.config.timeout_minutes * 60
    for argv in commands:
        line = shlex.join(argv)
        p.log(f"{kind}: $ {line}")
        out = proc.run_group(argv, cwd=cwd, env=p.env, timeout=timeout, stop=p.stop)
        text = (out.stdout + (f"\n{out.stderr}" if out.stderr else "")).rstrip()
        if text:
            p.log(text)
        if out.returncode != 0:
            why = out.stderr if out.returncode in (124, 127) and out.stderr else f"exit {out.returncode}"
            tail = "\n".join(redact.active().mask(out.stdout).strip().splitlines()[-30:])
            return f"worktree.{kind} `{line}` failed ({why})" + (f":\n{tail}" if tail else "")
    return None

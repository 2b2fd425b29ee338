"""Tiny single-purpose git functions. Every call names its repository with `cwd`."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import NamedTuple

from orchestrator_lib import proc
from orchestrator_lib.errors import UsageError

# Used when the machine has no git identity (CI, fresh containers): commits must still work.
_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "Claude Code Orchestrator",
    "GIT_AUTHOR_EMAIL": "orchestrator@localhost",
    "GIT_COMMITTER_NAME": "Claude Code Orchestrator",
    "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
}


class Worktree(NamedTuple):
    path: Path
    head: str
    branch: str | None  # short name, None when detached
    locked: str | None = None  # the lock reason ("" without one), None when not locked


def git(cwd: Path, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> proc.Output:
    return proc.run(("git", *args), cwd=cwd, env=_env(cwd), timeout=timeout, check=check, stdin=stdin)


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    if _needs_identity(cwd):
        for key, value in _FALLBACK_IDENTITY.items():
            env.setdefault(key, value)
    return env


_identity_cache: dict[Path, bool] = {}


def _needs_identity(cwd: Path) -> bool:
    if cwd not in _identity_cache:
        out = proc.run(("git", "config", "user.email"), cwd=cwd, check=False)
        _identity_cache[cwd] = out.returncode != 0 or not out.stdout.strip()
    return _identity_cache[cwd]


def find_root(start: Path) -> Path:
    """The top level of the git repository containing `start`.

    Plain `git rev-parse`: every command starts here, and importing GitPython for it alone
    costs more than the rest of `status` does.
    """
    if not start.is_dir():
        raise UsageError(f"{start} is not a folder: pass --project DIR with a git checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    top = proc.run(("git", "rev-parse", "--show-toplevel"), cwd=start, env=env, check=False)
    if top.returncode == 0 and top.stdout.strip():
        return Path(top.stdout.strip()).resolve()
    bare = proc.run(("git", "rev-parse", "--is-bare-repository"), cwd=start, env=env, check=False)
    if bare.stdout.strip() == "true":
        raise UsageError(f"{start} is a bare git repository; point --project at a checkout")
    raise UsageError(f"{start} is not inside a git repository: run `git init` there, or pass --project DIR")


def current_branch(cwd: Path) -> str | None:
    out = git(cwd, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def rev_parse(cwd: Path, ref: str) -> str | None:
    out = git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def branch_exists(cwd: Path, name: str) -> bool:
    return rev_parse(cwd, f"refs/heads/{name}") is not None


def has_commits(cwd: Path) -> bool:
    return rev_parse(cwd, "HEAD") is not None


def count_commits(cwd: Path, base: str, tip: str) -> int:
    return int(git(cwd, "rev-list", "--count", f"{base}..{tip}").stdout.strip() or 0)


def is_ancestor(cwd: Path, ancestor: str, descendant: str) -> bool:
    return git(cwd, "merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode == 0


def worktrees(cwd: Path) -> list[Worktree]:
    out = git(cwd, "worktree", "list", "--porcelain", "-z").stdout
    found: list[Worktree] = []
    for record in out.split("\0\0"):
        fields = dict(_field(f) for f in record.split("\0") if f)
        if "worktree" in fields:
            branch = fields.get("branch", "").removeprefix("refs/heads/") or None
            found.append(Worktree(Path(fields["worktree"]), fields.get("HEAD", ""), branch, fields.get("locked")))
    return found


def _field(text: str) -> tuple[str, str]:
    key, _, value = text.partition(" ")
    return key, value


def worktree_of_branch(cwd: Path, branch: str) -> Path | None:
    for wt in worktrees(cwd):
        if wt.branch == branch:
            return wt.path
    return None


def add_worktree(root: Path, path: Path, branch: str, start: str | None) -> None:
    """New branch from `start`, or (start None) check out the existing branch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if start is None:
        git(root, "worktree", "add", str(path), branch)
    else:
        git(root, "worktree", "add", "-b", branch, str(path), start)


def add_detached_worktree(root: Path, path: Path, start: str) -> None:
    """A scratch checkout of `start` on no branch: nothing in it can move a branch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    git(root, "worktree", "add", "--detach", str(path), start)


def untracked_files(cwd: Path) -> list[str]:
    """Every file git does not track, ignored ones included (relative to `cwd`)."""
    return [p for p in git(cwd, "ls-files", "--others", "-z").stdout.split("\0") if p]


def prune_worktrees(root: Path) -> None:
    git(root, "worktree", "prune")


def delete_branch(root: Path, name: str, force: bool = False) -> None:
    git(root, "branch", "-D" if force else "-d", name)


def branches(root: Path, pattern: str) -> list[str]:
    out = git(root, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{pattern}").stdout
    return [line for line in out.splitlines() if line]


def status_paths(cwd: Path) -> list[str]:
    """Paths with uncommitted changes (tracked or untracked, not ignored)."""
    out = git(cwd, "status", "--porcelain", "-z", "--untracked-files=all").stdout
    paths: list[str] = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":  # a rename carries its source path in the next field
                i += 1
        i += 1
    return paths


def has_changes(cwd: Path, path: str) -> bool:
    """Whether `path` differs from HEAD in the worktree or the index (untracked counts)."""
    out = git(cwd, "status", "--porcelain", "-z", "--untracked-files=all", "--", path).stdout
    return bool(out.strip("\0"))


def commit_all(cwd: Path, message: str) -> str | None:
    """Stage everything and commit; None when there was nothing to commit."""
    git(cwd, "add", "-A")
    if git(cwd, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return None
    git(cwd, "commit", "--no-verify", "-q", "-m", message)
    return rev_parse(cwd, "HEAD")


def discard_changes(cwd: Path) -> list[str]:
    """Throw away uncommitted changes in a runner-owned worktree; returns what was dropped."""
    dropped = status_paths(cwd)
    if dropped:
        git(cwd, "reset", "-q", "--hard")
        git(cwd, "clean", "-q", "-fd")
    return dropped


def reset_hard(cwd: Path, ref: str) -> None:
    git(cwd, "reset", "-q", "--hard", ref)


def reset_soft(cwd: Path, ref: str) -> None:
    git(cwd, "reset", "-q", "--soft", ref)


def changed_between(cwd: Path, base: str, tip: str) -> list[str]:
    out = git(cwd, "diff", "--name-only", "-z", base, tip).stdout
    return [p for p in out.split("\0") if p]


def diff(cwd: Path, base: str, tip: str = "HEAD", max_chars: int = 60_000) -> str:
    text = git(cwd, "diff", "--stat", "--patch", base, tip).stdout
    return text if len(text) <= max_chars else text[:max_chars] + "\n[diff truncated]\n"


def merge_no_ff(cwd: Path, branch: str, subject: str, trailers: Sequence[str]) -> list[str]:
    """Merge `branch`; return the conflicted paths ([] on success, merge left in progress otherwise)."""
    args = ["merge", "--no-ff", "--no-edit", "-m", subject]
    for trailer in trailers:
        args += ["-m", trailer]
    out = git(cwd, *args, branch, check=False)
    if out.returncode == 0:
        return []
    conflicted = unmerged_paths(cwd)
    if not conflicted:
        raise proc.CalledProcessError(("git", *args, branch), cwd, out.returncode, out.stdout + out.stderr)
    return conflicted


def unmerged_paths(cwd: Path) -> list[str]:
    out = git(cwd, "diff", "--name-only", "--diff-filter=U", "-z").stdout
    return [p for p in out.split("\0") if p]


def abort_merge(cwd: Path) -> None:
    git(cwd, "merge", "--abort", check=False)


def abort_and_reset(cwd: Path, head: str) -> None:
    """Back to `head`, a merge in progress abandoned: for a branch of the runner's own only."""
    abort_merge(cwd)
    reset_hard(cwd, head)


def commit_merge(cwd: Path, parents: Sequence[str], messages: Sequence[str]) -> str:
    """Commit the worktree as a merge of `parents`, whatever state the merge is in.

    Works whether a resolver left the merge in progress or committed on its own:
    the result is one merge commit with our message and trailers.
    """
    git(cwd, "add", "-A")
    tree = git(cwd, "write-tree").stdout.strip()
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    for message in messages:
        args += ["-m", message]
    sha = git(cwd, *args).stdout.strip()
    git(cwd, "reset", "-q", "--hard", sha)  # also ends the merge in progress
    return sha


def blob_size(cwd: Path, ref: str, path: str) -> int | None:
    out = git(cwd, "cat-file", "-s", f"{ref}:{path}", check=False)
    return int(out.stdout.strip()) if out.returncode == 0 else None


def milestone_trailers(cwd: Path, ref: str) -> dict[str, str]:
    """Milestone id -> merge commit, read from `Milestone:` trailers on `ref`'s first-parent history."""
    fmt = "%H%x1f%(trailers:key=Milestone,valueonly,separator=%x1e)%x00"
    out = git(cwd, "log", "--first-parent", f"--format={fmt}", ref, check=False)
    merged: dict[str, str] = {}
    for record in out.stdout.split("\0"):
        sha, _, values = record.strip().partition("\x1f")
        for value in values.split("\x1e"):
            if value.strip():
                merged.setdefault(value.strip(), sha)
    return merged


def update_ref(cwd: Path, branch: str, new: str, old: str) -> None:
    git(cwd, "update-ref", f"refs/heads/{branch}", new, old)


def merge_ff_only(cwd: Path, commit: str) -> None:
    git(cwd, "merge", "--ff-only", "-q", commit)


def git_common_dir(cwd: Path) -> Path:
    out = git(cwd, "rev-parse", "--git-common-dir").stdout.strip()
    return (cwd / out).resolve()


def exclude(root: Path, patterns: Sequence[str]) -> None:
    """Keep runtime folders out of git without touching the user's .gitignore."""
    path = git_common_dir(root) / "info" / "exclude"
    existing = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    missing = [p for p in patterns if p not in existing]
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [*existing, "# Claude Code Orchestrator runtime files", *missing]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# A shared remote (executor.kind "ray"): the runner and its workers meet there. Refspecs with a
# leading "+" force: milestone branches are the runner's own and may be rewritten (a squash).


def ls_remote(cwd: Path, url: str, *refs: str) -> proc.Output:
    return git(cwd, "ls-remote", url, *refs, check=False, timeout=60)


def remote_tip(cwd: Path, url: str, ref: str) -> str | None:
    out = git(cwd, "ls-remote", url, ref, timeout=60)
    tips = [line.split("\t") for line in out.stdout.splitlines()]
    return next((sha for sha, name in tips if name == ref), None)


def config_value(cwd: Path, name: str) -> str:
    return git(cwd, "config", name, check=False).stdout.strip()


def set_branch(cwd: Path, name: str, sha: str) -> None:
    git(cwd, "update-ref", f"refs/heads/{name}", sha)


def push(cwd: Path, url: str, *refspecs: str) -> None:
    git(cwd, "push", "-q", url, *refspecs, timeout=600)


def fetch(cwd: Path, url: str, *refspecs: str) -> None:
    git(cwd, "fetch", "-q", "--no-tags", url, *refspecs, timeout=600)


def show_file(cwd: Path, ref: str, path: str) -> str | None:
    out = git(cwd, "show", f"{ref}:{path}", check=False)
    return out.stdout if out.returncode == 0 else None


class BranchInfo(NamedTuple):
    name: str
    merged: bool  # its tip is already on the base branch


def runner_branches(root: Path, base: str, prefixes: Sequence[str], extra: Collection[str] = ()) -> list[BranchInfo]:
    """The branches under `prefixes` (and those named in `extra`) and whether each is merged into `base`.

    GitPython, short-lived (its Repo objects leak in long-running processes): `clean` is a
    one-shot command, and one repository object answers every ancestry question at once.
    """
    import git as gitpython  # imported here for start-up speed: only `clean` needs it

    with gitpython.Repo(root) as repo:
        base_commit = repo.commit(base)
        return [
            BranchInfo(head.name, repo.is_ancestor(head.commit, base_commit))
            for head in sorted(repo.heads, key=lambda h: h.name)
            if head.name.startswith(tuple(prefixes)) or head.name in extra
        ]


def fork_point(cwd: Path, base: str, branch: str) -> str | None:
    """Where `branch` left `base` (their merge base), or None when they share no history."""
    out = git(cwd, "merge-base", base, branch, check=False)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def version(cwd: Path) -> str:
    """`git --version` as git prints it, e.g. "git version 2.39.5"."""
    return git(cwd, "--version").stdout.strip()


class MergePreview(NamedTuple):
    tree: str  # the merged tree (with conflict markers where it conflicts)
    conflicted: tuple[str, ...]  # () when the merge would be clean


def merge_tree(cwd: Path, ours: str, theirs: str) -> MergePreview:
    """The merge of two commits computed in the object store alone (git 2.38+): no worktree is touched."""
    out = git(cwd, "merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs, check=False)
    lines = out.stdout.splitlines()
    if out.returncode not in (0, 1) or not lines:
        raise proc.CalledProcessError(("git", "merge-tree", ours, theirs), cwd, out.returncode, out.stdout + out.stderr)
    return MergePreview(lines[0].strip(), tuple(p for p in lines[1:] if p) if out.returncode else ())


def commit_tree(cwd: Path, tree: str, parents: Sequence[str], message: str) -> str:
    """A commit object of `tree` on no branch: the step of a merge forecast (unreachable, gc takes it)."""
    args = ["commit-tree", tree, "-m", message]
    for parent in parents:
        args += ["-p", parent]
    return git(cwd, *args).stdout.strip()

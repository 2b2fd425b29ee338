"""The one way the runner removes a directory: guarded, so no config value or bug can aim it at
the user's repository. Every `rmtree`, `rmdir` and `git worktree remove --force` goes through here.

Refused, whatever the caller says: the repository root (or any folder holding it), `.git` or anything
inside it, any directory holding a `.git` *directory* (a repository of its own; a worktree holds a
`.git` file), and anything not strictly inside `allowed_under` (the worktree folder, or the one
folder the caller owns) — and `allowed_under` itself must lie strictly inside the repository.
A refusal is an internal error (a bug to report), never a deletion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator_lib import git


class UnsafeDeleteError(Exception):
    """A removal the guard refused: an internal error, nothing was deleted."""


def check(path: Path, *, root: Path, allowed_under: Path) -> Path:
    """The resolved `path` when removing it is safe; else UnsafeDeleteError saying why."""
    real_root, real = root.resolve(), path.resolve()
    folder = allowed_under.resolve()
    if real == real_root or real_root.is_relative_to(real):
        raise _refused(path, f"it is the repository {root} or holds it")
    for git_dir in _git_dirs(root):
        if real == git_dir or real.is_relative_to(git_dir) or git_dir.is_relative_to(real):
            raise _refused(path, f"it is, holds or lies inside git's own data {git_dir}")
    if folder == real_root or not folder.is_relative_to(real_root):
        raise _refused(path, f"the folder it should lie in, {allowed_under}, is not strictly inside {root}")
    if real == folder or not real.is_relative_to(folder):
        raise _refused(path, f"it is not strictly inside {allowed_under}")
    if (path / ".git").is_dir() and not (path / ".git").is_symlink():
        raise _refused(path, "it holds a .git directory (a repository of its own)")
    return real


def remove_tree(path: Path, *, root: Path, allowed_under: Path) -> None:
    """Remove a directory and everything in it (missing is fine)."""
    if not path.exists() and not path.is_symlink():
        return
    check(path, root=root, allowed_under=allowed_under)
    shutil.rmtree(path, ignore_errors=True)


def remove_empty_dir(path: Path, *, root: Path, allowed_under: Path) -> None:
    check(path, root=root, allowed_under=allowed_under)
    path.rmdir()


def remove_worktree(root: Path, path: Path, *, allowed_under: Path, force: bool = True) -> None:
    """`git worktree remove` of one of the runner's worktrees (force: its uncommitted files go too)."""
    check(path, root=root, allowed_under=allowed_under)
    git.git(root, "worktree", "remove", *(["--force"] if force else []), str(path))


def force_remove_worktree(root: Path, path: Path, *, allowed_under: Path) -> None:
    """A half-made worktree: git refuses one whose .git file is missing, so take it down by hand then."""
    check(path, root=root, allowed_under=allowed_under)
    if git.git(root, "worktree", "remove", "--force", "--force", str(path), check=False).returncode:
        git.git(root, "worktree", "unlock", str(path), check=False)
        remove_tree(path, root=root, allowed_under=allowed_under)


def _git_dirs(root: Path) -> list[Path]:
    dirs = [(root / ".git").resolve()]
    out = git.git(root, "rev-parse", "--git-common-dir", check=False)
    if out.returncode == 0 and out.stdout.strip():  # not a repository (yet): the literal .git still guards
        dirs.append((root / out.stdout.strip()).resolve())
    return list(dict.fromkeys(dirs))


def _refused(path: Path, why: str) -> UnsafeDeleteError:
    return UnsafeDeleteError(f"refused to delete {path}: {why} (a bug in the orchestrator; nothing was deleted)")

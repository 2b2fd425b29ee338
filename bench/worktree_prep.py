#!/usr/bin/env python3
"""Issue 14 benchmark: making a worktree ready when the project has a heavy ignored folder.

A real git repository with `.env` (copied through .worktreeinclude) and an ignored
`node_modules/` of N small files. Measured per new worktree: `git worktree add` alone, then
worktree_prep.prepare with node_modules linked (worktree.link), against copying the folder
(what a copy list would do). Also the bytes the worktree holds of its own.

Usage: python bench/worktree_prep.py [--files N] [--runs R]
Results: printed, and written to bench/results/worktree_prep-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from orchestrator_lib import worktree_prep  # noqa: E402
from orchestrator_lib.config import WorktreeConfig  # noqa: E402


def git(cwd: Path, *args: str) -> None:
    subprocess.run(("git", *args), cwd=cwd, check=True, capture_output=True)


def make_repo(root: Path, files: int) -> None:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "b@example.com")
    git(root, "config", "user.name", "Bench")
    (root / ".gitignore").write_text(".env\nnode_modules/\n")
    (root / ".worktreeinclude").write_text(".env\n")
    (root / "app.js").write_text("console.log(1)\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / ".env").write_text("API_KEY=bench-secret-value\n")
    for n in range(files):
        package = root / "node_modules" / f"pkg{n // 100}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"f{n}.js").write_text("module.exports = 1;\n" * 20)


def own_bytes(folder: Path) -> int:
    return sum(os.lstat(p).st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def one(root: Path, n: int, link: bool) -> dict[str, float]:
    path = root / ".worktree" / f"w{n}{'l' if link else 'c'}"
    started = time.perf_counter()
    git(root, "worktree", "add", "-q", "-b", path.name, str(path))
    added = time.perf_counter()
    w = WorktreeConfig(link=("node_modules",) if link else ())
    prep = worktree_prep.Prep(root, w, root / "orchestrator.config.json", dict(os.environ), root / "bench.log")
    assert worktree_prep.prepare(prep, path) is None
    if not link:
        shutil.copytree(root / "node_modules", path / "node_modules", symlinks=True)
    done = time.perf_counter()
    return {"worktree_add_s": added - started, "prepare_s": done - added, "own_mb": own_bytes(path) / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        make_repo(root, args.files)
        results = {mode: [one(root, n, mode == "link") for n in range(args.runs)] for mode in ("link", "copy")}
    summary = {
        mode: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        for mode, runs in results.items()
    }
    print(f"node_modules: {args.files} files; median of {args.runs} worktrees")
    for mode, figures in summary.items():
        print(f"  {mode:<5} " + "  ".join(f"{k} {v}" for k, v in figures.items()))
    out = HERE / "results" / f"worktree_prep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"files": args.files, "runs": args.runs, "median": summary, "all": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A short picture of a repository for a planning agent: top-level files, languages, tests.

Read from git (tracked files) so build output, virtualenvs and the runner's own folders stay out.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from orchestrator_lib import git

LANGUAGES = {
    ".py": "Python",
    ".js": "JavaScript",
    ".jsx": "JavaScript",
    ".mjs": "JavaScript",
    ".ts": "TypeScript",
    ".tsx": "TypeScript",
    ".go": "Go",
    ".rs": "Rust",
    ".java": "Java",
    ".kt": "Kotlin",
    ".rb": "Ruby",
    ".php": "PHP",
    ".cs": "C#",
    ".c": "C",
    ".h": "C",
    ".cpp": "C++",
    ".hpp": "C++",
    ".swift": "Swift",
    ".sh": "Shell",
    ".sql": "SQL",
    ".html": "HTML",
    ".css": "CSS",
}
_TEST_FILE = re.compile(r"(^|/)(tests?|spec|__tests__)/|(^|/)test_[^/]+\.py$|_test\.(py|go)$|\.(test|spec)\.[jt]sx?$")
_SHOWN = 40


class Picture(NamedTuple):
    top_level: tuple[str, ...]
    languages: tuple[tuple[str, int], ...]  # (language, files), most files first
    test_files: int
    test_dirs: tuple[str, ...]
    test_command: str | None


def survey(root: Path, configured_test_command: str | None = None) -> Picture:
    files = _tracked(root)
    tests = [f for f in files if _TEST_FILE.search(f)]
    dirs = sorted({str(PurePosixPath(f).parent) for f in tests})
    return Picture(
        top_level=_top_level(files),
        languages=_languages(files),
        test_files=len(tests),
        test_dirs=tuple(dirs[:10]),
        test_command=configured_test_command or test_command(root),
    )


def _tracked(root: Path) -> list[str]:
    if not git.has_commits(root):
        return []
    return [p for p in git.git(root, "ls-files", "-z").stdout.split("\0") if p]


def _top_level(files: Sequence[str]) -> tuple[str, ...]:
    names = {f.split("/", 1)[0] + ("/" if "/" in f else "") for f in files}
    return tuple(sorted(names, key=lambda n: (not n.endswith("/"), n.lower())))


def _languages(files: Sequence[str]) -> tuple[tuple[str, int], ...]:
    counts = collections.Counter(LANGUAGES[s] for f in files if (s := PurePosixPath(f).suffix.lower()) in LANGUAGES)
    return tuple(counts.most_common(6))


def test_command(root: Path) -> str | None:
    """How this project's tests are usually run, guessed from its build files."""
    if (root / "package.json").is_file() and _npm_has_test(root / "package.json"):
        return "npm test"
    if (root / "Cargo.toml").is_file():
        return "cargo test"
    if (root / "go.mod").is_file():
        return "go test ./..."
    if _makefile_has_test(root / "Makefile"):
        return "make test"
    python = ("pyproject.toml", "setup.py", "setup.cfg", "pytest.ini", "tox.ini", "requirements.txt")
    if any((root / name).is_file() for name in python) or (root / "tests").is_dir():
        return "python -m pytest -q"
    return None


def _npm_has_test(path: Path) -> bool:
    try:
        scripts = json.loads(path.read_text(encoding="utf-8")).get("scripts", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(scripts, dict) and "test" in scripts


def _makefile_has_test(path: Path) -> bool:
    try:
        return re.search(r"(?m)^test\s*:", path.read_text(encoding="utf-8", errors="replace")) is not None
    except OSError:
        return False


def describe(picture: Picture) -> str:
    """The picture as a few lines of text for a prompt."""
    shown = ", ".join(picture.top_level[:_SHOWN]) or "(no tracked files yet: a new project)"
    more = f" … and {len(picture.top_level) - _SHOWN} more" if len(picture.top_level) > _SHOWN else ""
    languages = ", ".join(f"{name} ({n} files)" for name, n in picture.languages) or "none detected"
    tests = f"{picture.test_files} test files in {', '.join(picture.test_dirs)}" if picture.test_files else "none yet"
    run = f"`{picture.test_command}`" if picture.test_command else "unknown (no build file says)"
    return "\n".join(
        [
            f"- Top-level files: {shown}{more}",
            f"- Languages: {languages}",
            f"- Existing tests: {tests}",
            f"- How tests are run: {run}",
        ]
    )

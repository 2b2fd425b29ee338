"""The shape of the code, checked statically (issue 11): one-way layers, small classes, functions and
files, and the preset names in one place. A regression fails here, naming the module and the line."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from orchestrator_lib import presets

ROOT = Path(__file__).resolve().parent.parent
MAX_CLASS, MAX_FUNCTION, MAX_FILE = 300, 60, 800


def _sources() -> dict[str, Path]:
    """module name -> file, for the product code (tests and benchmarks excluded)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "*.py"], capture_output=True, text=True, check=True)
    files = [f for f in out.stdout.split() if not f.startswith(("tests/", "bench/"))]
    return {f[:-3].replace("/", ".").removesuffix(".__init__"): ROOT / f for f in files}


SOURCES = _sources()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in SOURCES.items()}


def _imports(module: str, tree: ast.AST) -> set[str]:
    """Every project module this one imports, at the top, under TYPE_CHECKING or inside a function."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {t for t in targets if t in SOURCES and t != module}
    return found


GRAPH = {name: _imports(name, tree) for name, tree in TREES.items()}


def _cycle_from(start: str) -> list[str] | None:
    path: list[str] = []

    def walk(node: str, seen: set[str]) -> list[str] | None:
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                found = walk(nxt, seen)
                if found:
                    return found
        path.pop()
        return None

    return walk(start, {start})


def test_the_checks_see_the_project() -> None:
    assert {"orchestrator", "advanced", "orchestrator_lib.pipeline", "orchestrator_lib.presets"} <= SOURCES.keys()
    assert "orchestrator_lib.pipeline" in GRAPH["orchestrator"]


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_import_cycle(module: str) -> None:
    assert _cycle_from(module) is None, f"import cycle: {' -> '.join(_cycle_from(module) or [])}"


def test_no_lower_module_imports_orchestrator() -> None:
    assert [m for m, targets in GRAPH.items() if "orchestrator" in targets] == []


def test_advanced_imports_only_the_lower_layers() -> None:
    """advanced.py sits below the workflow parts (pipeline, integration, draft ...) and above the mechanisms."""
    above = {"orchestrator"} | {m for m, targets in GRAPH.items() if "advanced" in targets}
    assert GRAPH["advanced"] & above == set()
    assert all("advanced" not in GRAPH[m] for m in GRAPH["advanced"])


def _sized(kinds: tuple[type, ...]) -> list[tuple[int, str]]:
    sized = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, kinds):
                assert isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                sized.append((lines, f"{SOURCES[name].relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sized


def test_no_class_over_300_lines() -> None:
    assert [c for c in _sized((ast.ClassDef,)) if c[0] > MAX_CLASS] == []


def test_no_function_over_60_lines() -> None:
    assert [f for f in _sized((ast.FunctionDef, ast.AsyncFunctionDef)) if f[0] > MAX_FUNCTION] == []


def test_no_file_over_800_lines() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in SOURCES.values()}
    assert {f: n for f, n in sizes.items() if n > MAX_FILE} == {}


def test_preset_names_are_a_literal_list_in_one_module() -> None:
    names = set(presets.PRESETS)
    holders = set()
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            # A dict keyed by preset names is a second list too (what each preset prints, say).
            elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)) and elements is not None:
                strings = {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(strings & names) >= 2:
                    holders.add(f"{SOURCES[name].relative_to(ROOT)}:{node.lineno}")
    assert holders == {f"orchestrator_lib/presets.py:{_line_of_presets()}"}


def _line_of_presets() -> int:
    source = (ROOT / "orchestrator_lib" / "presets.py").read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(source, 1) if line.startswith("PRESETS = ("))


def test_every_preset_has_one_record() -> None:
    assert tuple(presets.REGISTRY) == presets.PRESETS
    assert all(presets.get(name).name == name for name in presets.PRESETS)
    assert presets.get("no-such-agent").auth_hint is None


def test_a_function_level_project_import_says_why() -> None:
    """Imports inside functions hide the layers; one for start-up speed is fine when its comment says so."""
    unexplained = []
    for name, tree in TREES.items():
        lines = SOURCES[name].read_text(encoding="utf-8").splitlines()
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                project = isinstance(node, (ast.Import, ast.ImportFrom)) and _imports(name, ast.Module([node], []))
                if project and "#" not in lines[node.lineno - 1]:
                    unexplained.append(f"{SOURCES[name].relative_to(ROOT)}:{node.lineno}")
    assert unexplained == [], "import at the top, or say why it is imported here (start-up speed)"

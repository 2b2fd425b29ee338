"""The installed tool: the wheel and the sdist, each built from this checkout's files and installed
into a fresh venv (the way pipx does), give an `orchestrator` command that works from any folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

from conftest import ORCHESTRATOR, REPO

import orchestrator_lib

# Read before the autouse fixture points HOME at a temp folder: installs reuse the user's pip cache.
PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
PACKAGE = orchestrator_lib.__name__
SLOW = 600  # seconds; a cold pip cache downloads the dependencies


def _checkout_copy(dest: Path) -> Path:
    """The files a fresh clone would have, plus uncommitted ones (what is being tested)."""
    listed = subprocess.run(
        ("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"),
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_CACHE_DIR": PIP_CACHE, "DEMO_AGENT_DELAY": "0", "NO_COLOR": "1", **extra}


def _run(argv: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=timeout)


def _build(kind: str, tmp: Path) -> Path:
    source = _checkout_copy(tmp / "checkout")
    built = _run([sys.executable, "-m", "build", f"--{kind}", "--outdir", str(tmp / "dist"), str(source)], tmp, SLOW)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (artifact,) = (tmp / "dist").iterdir()
    return artifact


def _install(artifact: Path, tmp: Path) -> Path:
    """A fresh venv with the artifact and its dependencies; returns its bin/ folder."""
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)  # this pip installs into it (`--python`), as pipx shares one pip
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q", str(artifact)]
    installed = _run(pip, tmp, SLOW)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return env_dir / "bin"


def _check_the_installed_command(bin_dir: Path, tmp: Path) -> None:
    elsewhere = tmp / "elsewhere"  # outside the checkout: nothing can come from it
    elsewhere.mkdir()
    command = str(bin_dir / "orchestrator")

    version = _run([command, "--version"], elsewhere)
    assert (version.returncode, version.stdout) == (0, f"orchestrator {orchestrator_lib.__version__}\n"), version

    helped = _run([command, "--help"], elsewhere)
    from_checkout = _run([sys.executable, str(ORCHESTRATOR), "--help"], REPO)
    assert helped.returncode == 0
    words = from_checkout.stdout.replace("orchestrator.py", "orchestrator").split()
    assert helped.stdout.split() == words  # the same text; argparse only indents to the program's name

    where = _run([str(bin_dir / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"], elsewhere)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), where  # the installed code, not the checkout

    reference = _run(
        [str(bin_dir / "python"), "-c", "from orchestrator_lib import draft; print(draft.format_reference())"],
        elsewhere,
    )
    assert reference.stdout == (REPO / "docs" / "milestones.md").read_text() + "\n"  # draft's prompt embeds it

    demo_dir = tmp / "demo"
    demo = _run([command, "demo", "--dir", str(demo_dir)], elsewhere, 300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert f"Look around: cd {demo_dir} && orchestrator status" in demo.stdout
    assert sorted(p.name for p in (demo_dir / "milestones").iterdir()) == ["1A.md", "1B.md", "2A.md"]

    status = _run([command, "status", "--json"], demo_dir)  # inside the repository: its own milestones
    assert status.returncode == 0, status.stderr
    assert {m["id"]: m["status"] for m in json.loads(status.stdout)["milestones"]} == dict.fromkeys(
        ("1A", "1B", "2A"), "merged"
    )
    by_module = _run([str(bin_dir / "python"), "-m", PACKAGE, "status", "--json"], demo_dir)
    assert by_module.returncode == 0 and json.loads(by_module.stdout) == json.loads(status.stdout) | {
        "generated_at": json.loads(by_module.stdout)["generated_at"]
    }

    again = _run([command, "run"], demo_dir)  # `run` in the current repository: its plan is all merged
    assert again.returncode == 0, again.stdout + again.stderr

    bad = _run([command, "--stage", "x"], demo_dir)
    assert bad.returncode == 2 and "usage: orchestrator " in bad.stderr


def _requirements(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def test_the_wheel_installs_an_orchestrator_command_that_works_anywhere(tmp_path: Path) -> None:
    wheel = _build("wheel", tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        shipped = {n.rsplit("/", 1)[1]: archive.read(n) for n in archive.namelist() if "/example/" in n}
    runtime = re.findall(r"(?m)^Requires-Dist: (\S+)$", metadata)  # lines with `; extra == "dev"` have spaces
    assert runtime == _requirements(REPO / "requirements.txt")  # requirements.txt is the one source
    assert {p.name: p.read_bytes() for p in (REPO / "milestones").iterdir()} == shipped  # the example plan
    _check_the_installed_command(_install(wheel, tmp_path), tmp_path)


def test_the_sdist_installs_the_same_command(tmp_path: Path) -> None:
    sdist = _build("sdist", tmp_path)
    _check_the_installed_command(_install(sdist, tmp_path), tmp_path)


def test_pyproject_reads_the_dependencies_from_the_requirements_files() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    assert dynamic["optional-dependencies"]["dev"] == {"file": ["requirements-dev.txt"]}
    assert "dependencies" not in pyproject["project"] and "optional-dependencies" not in pyproject["project"]
    assert pyproject["project"]["scripts"] == {"orchestrator": "orchestrator:main"}
    # setuptools reads these files as plain requirement lists: no -r/-e lines
    for name in ("requirements.txt", "requirements-dev.txt"):
        text = (REPO / name).read_text()
        assert not re.search(r"(?m)^\s*-", text), f"{name}: setuptools cannot read option lines"

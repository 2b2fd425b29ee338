"""Agents behind one interface: build argv + env, run with watchdogs, tee output to a log.

Presets differ only in their argv and in how their output is read (ccorch.limits).
The contract every agent gets is documented in the README ("Plugging in your own agent").
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from ccorch import files, presets, proc, redact
from ccorch.config import AgentConfig
from ccorch.errors import UsageError
from ccorch.review import VERDICT_SCHEMA

ROLES = ("implement", "review", "remediate", "resolve")
# Derived from the preset registry (ccorch/presets.py), where each agent's knowledge lives.
INSTALL_HINTS = {p.name: p.install_hint for p in presets.REGISTRY.values() if p.install_hint}
AUTH_HINTS = {p.name: p.auth_hint for p in presets.REGISTRY.values() if p.auth_hint}
OWN_FILES = {p.name: p.own_files for p in presets.REGISTRY.values() if p.own_files}
DEFAULT_EXECUTABLES = {p.name: p.executable for p in presets.REGISTRY.values() if p.executable}
DEMO_AGENT = Path(__file__).with_name("demo_agent.py")
_OUTPUT_LINES_KEPT = 4000
_LINE_CHARS_KEPT = 20_000


class Invocation(NamedTuple):
    argv: tuple[str, ...]
    env: dict[str, str]
    stdin: str
    preset: str
    session_id: str | None  # the agent session this run writes to (Claude; Codex when resumed), for resuming


class AgentRun(NamedTuple):
    returncode: int | None  # None: we killed it
    output: str  # the tail of what it printed (the full output is in its log)
    killed: str | None  # "timeout", "idle", "stopped", "context" (it said so) or None
    duration: float
    pid: int


class Watch(NamedTuple):
    """What the runner hears while an agent runs; all callbacks are cheap and thread-safe."""

    stop: threading.Event
    on_start: Callable[[int, float], None]
    on_line: Callable[[str], None]
    end_on: Callable[[str], str | None] | None = None  # a line that ends the run (context used up)


def auth_hint(preset: str) -> str:
    return presets.get(preset).auth_hint or presets.GENERIC_AUTH_HINT


def executable_for(agent: AgentConfig) -> str | None:
    if agent.preset == "command":
        return agent.command[0] if agent.command else None
    if agent.preset == "demo":
        return sys.executable
    return agent.executable or DEFAULT_EXECUTABLES[agent.preset]


def check_installed(agent: AgentConfig, root: Path) -> str | None:
    """None when the agent can be started, else a message that says how to install it."""
    exe = executable_for(agent)
    if exe is None:
        return "agent.command is empty"
    resolved = shutil.which(exe) or (shutil.which(str(root / exe)) if not os.path.isabs(exe) else None)
    if resolved:
        return None
    if agent.preset in INSTALL_HINTS:
        return (
            f"the {agent.preset} agent CLI `{exe}` is not installed (or not on PATH). Install it with "
            f"`{INSTALL_HINTS[agent.preset]}`, set agent.executable to its path, or try the offline "
            "demo: `./orchestrator.sh demo`"
        )
    return f"agent command `{exe}` was not found: check agent.command in the config"


def build_invocation(
    agent: AgentConfig,
    *,
    role: str,
    milestone_id: str,
    worktree: Path,
    prompt: str,
    prompt_file: Path,
    base_env: Mapping[str, str],
    extra_env: Mapping[str, str],
    resume_session: str | None,
) -> Invocation:
    env = {**base_env, **agent.env, **extra_env}
    env.update(
        ORCHESTRATOR_MILESTONE=milestone_id,
        ORCHESTRATOR_ROLE=role,
        ORCHESTRATOR_WORKTREE=str(worktree),
        ORCHESTRATOR_PROMPT_FILE=str(prompt_file),
    )
    session_id = None
    if agent.preset == "codex":
        argv, session_id = _codex_argv(agent, resume_session)
    elif agent.preset == "claude":
        argv, session_id = _claude_argv(agent, role, resume_session)
        if _is_root() and "--dangerously-skip-permissions" in argv:
            # Claude Code refuses to skip permissions as root unless told it is sandboxed;
            # running as root happens in containers, which is where unattended runs belong.
            env.setdefault("IS_SANDBOX", "1")
    elif agent.preset == "command":
        fields = {"prompt_file": str(prompt_file), "milestone": milestone_id, "role": role, "worktree": str(worktree)}
        argv = tuple(_expand(arg, fields) for arg in agent.command or ())
    elif agent.preset == "demo":
        argv = (sys.executable, str(DEMO_AGENT))
    else:
        argv = _other_argv(agent, prompt_file)
    if agent.preset == "gemini":
        # Every worktree is a folder gemini-cli has never seen: untrusted, it silently turns
        # --yolo back into asking for approval, which nobody answers in a headless run.
        env.setdefault("GEMINI_CLI_TRUST_WORKSPACE", "true")
    return Invocation(argv + tuple(agent.extra_args), env, prompt, agent.preset, session_id)


def _expand(arg: str, fields: Mapping[str, str]) -> str:
    for key, value in fields.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def _claude_argv(agent: AgentConfig, role: str, resume: str | None) -> tuple[tuple[str, ...], str]:
    argv = [agent.executable or "claude", "-p", "--output-format", "stream-json", "--verbose"]
    if agent.permission_mode:
        argv += ["--permission-mode", agent.permission_mode]
    else:
        argv.append("--dangerously-skip-permissions")
    if role == "review":
        # The reviewer reads and may run tests, but must not edit; the runner also
        # discards any change a reviewer leaves behind. Its verdict can come back as
        # structured output (ccorch.review reads it).
        argv += ["--disallowedTools", "Edit Write NotebookEdit", "--json-schema", json.dumps(VERDICT_SCHEMA)]
    if agent.model:
        argv += ["--model", agent.model]
    if resume:
        argv += ["--resume", resume]
        return tuple(argv), resume
    session = str(uuid.uuid4())
    return (*argv, "--session-id", session), session


def _codex_argv(agent: AgentConfig, resume: str | None) -> tuple[tuple[str, ...], str | None]:
    """`codex exec`, prompt on stdin; after a setback `codex exec resume <id>` continues the
    session Codex named in its thread.started event (ccorch.limits.read_report)."""
    exe = executable_for(agent) or "codex"
    model = ("--model", agent.model) if agent.model else ()
    flags = ("--json", "--dangerously-bypass-approvals-and-sandbox", *model)
    if resume:
        return (exe, "exec", "resume", *flags, resume, "-"), resume
    return (exe, "exec", *flags, "-"), None


def _other_argv(agent: AgentConfig, prompt_file: Path) -> tuple[str, ...]:
    exe = executable_for(agent) or agent.preset
    model = ("--model", agent.model) if agent.model else ()
    if agent.preset == "aider":
        # --no-check-update: with --yes-always an update prompt would be answered "yes".
        return (
            exe,
            "--yes-always",
            "--no-auto-commits",
            "--no-gitignore",
            "--no-check-update",
            "--analytics-disable",  # --yes-always would answer aider's analytics question "yes"
            "--no-pretty",
            *model,
            "--message-file",
            str(prompt_file),
        )
    # gemini reads the task from stdin; -p appends this line to it.
    return (exe, "--yolo", *model, "-p", "Carry out the task described above.")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def run_agent(
    inv: Invocation,
    *,
    cwd: Path,
    log_path: Path,
    header: str,
    timeout_s: float,
    idle_s: float,
    watch: Watch,
    clock: Callable[[], float] = time.monotonic,
) -> AgentRun:
    """Run to completion, or kill the whole process group on timeout, idleness or stop."""
    started = clock()
    with files.open_private(log_path, "ab") as log:
        log.write(f"\n===== {header} · {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        log.flush()
        try:
            process = proc.popen_group(inv.argv, cwd=cwd, env=inv.env)
        except OSError as e:
            raise UsageError(f"cannot start agent `{inv.argv[0]}`: {e.strerror}") from None
        watch.on_start(process.pid, _create_time(process.pid))
        reader = _Reader(process, log, watch.on_line, clock, watch.end_on)
        reader.start()
        _feed_stdin(process, inv.stdin)
        killed = _supervise(process, reader, started, timeout_s, idle_s, watch.stop, clock)
        reader.join(timeout=10)
        ended = f"killed ({killed})" if killed else f"exit {process.returncode}"
        log.write(
            f"===== {ended} after {clock() - started:.1f}s =====\n".encode()
        )  # what a reader of the log asks first
    return AgentRun(None if killed else process.returncode, reader.text(), killed, clock() - started, process.pid)


def _feed_stdin(process: subprocess.Popen[bytes], text: str) -> None:
    # A thread, so an agent that never reads stdin cannot block us on a full pipe.
    def feed() -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(text.encode("utf-8"))
            process.stdin.close()
        except OSError:
            pass

    threading.Thread(target=feed, daemon=True).start()


def _supervise(
    process: subprocess.Popen[bytes],
    reader: _Reader,
    started: float,
    timeout_s: float,
    idle_s: float,
    stop: threading.Event,
    clock: Callable[[], float],
) -> str | None:
    while True:
        if reader.done.wait(timeout=0.5):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # closed its output but lives on: the watchdogs below still apply
            if process.poll() is not None:
                proc.kill_group(process, grace=0.5)  # leave no children of it behind
                return None
        now = clock()
        reason = (
            "stopped"
            if stop.is_set()
            else "context"
            if reader.ended
            else "timeout"
            if now - started > timeout_s
            else "idle"
            if now - reader.last_activity > idle_s
            else None
        )
        if reason:
            proc.kill_group(process)
            return reason


def _create_time(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


class _Reader(threading.Thread):
    """Tees the agent's output to its log and keeps a bounded tail for classification."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        log: object,
        on_line: Callable[[str], None],
        clock: Callable[[], float],
        end_on: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self._process = process
        self._log = log
        self._on_line = on_line
        self._end_on = end_on
        self.ended = ""  # why the output says the run should end
        self._clock = clock
        self._lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
        self.last_activity = clock()
        self.done = threading.Event()

    def run(self) -> None:
        assert self._process.stdout is not None
        try:
            for raw in self._process.stdout:
                self.last_activity = self._clock()
                text = redact.active().mask(raw.decode("utf-8", "replace"))  # the log and the state see it masked
                self._log.write(text.encode("utf-8"))  # type: ignore[attr-defined]
                self._log.flush()  # type: ignore[attr-defined]
                line = text.rstrip("\r\n")
                self._lines.append(line[:_LINE_CHARS_KEPT])
                self._on_line(line)
                if self._end_on is not None and not self.ended:
                    self.ended = self._end_on(line) or ""
        except (OSError, ValueError):
            pass
        finally:
            self.done.set()

    def text(self) -> str:
        return "\n".join(self._lines)

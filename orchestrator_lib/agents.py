"""Agents behind one interface: build argv + env, run with watchdogs, tee output to a log.

Presets differ only in their argv and in how their output is read (orchestrator_lib.limits).
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

from orchestrator_lib import faults, files, launches, presets, proc, redact
from orchestrator_lib.config import AgentConfig
from orchestrator_lib.errors import UsageError
from orchestrator_lib.review import VERDICT_SCHEMA

ROLES = ("implement", "review", "remediate", "resolve")
# Derived from the preset registry (orchestrator_lib/presets.py), where each agent's knowledge lives.
INSTALL_HINTS = {p.name: p.install_hint for p in presets.REGISTRY.values() if p.install_hint}
AUTH_HINTS = {p.name: p.auth_hint for p in presets.REGISTRY.values() if p.auth_hint}
OWN_FILES = {p.name: p.own_files for p in presets.REGISTRY.values() if p.own_files}
DEFAULT_EXECUTABLES = {p.name: p.executable for p in presets.REGISTRY.values() if p.executable}
DEMO_AGENT = Path(__file__).with_name("demo_agent.py")
_OUTPUT_LINES_KEPT = 4000
_LINE_CHARS_KEPT = 20_000
_POLL_S = 0.1  # how often the runner looks at an agent's log and status
SCRUB_ENV = "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"
# Given as --allowedTools when the scrub is on (it overrides the permission mode). A milestone's own
# allowed_tools replaces it; disallowed_tools (the reviewer's no-edit rule among them) still wins over it.
FILE_TOOLS = ("Read", "Glob", "Grep", "Edit", "MultiEdit", "Write", "NotebookEdit", "TodoWrite")
SCRUB_ALLOWED_TOOLS = (*FILE_TOOLS, "Bash", "BashOutput", "KillShell", "Task", "WebFetch", "WebSearch")


def scrub_allowed_tools(permission_mode: str | None) -> tuple[str, ...]:
    """The tools the chosen mode would have let run: everything under bypassPermissions; reading and
    editing files under acceptEdits, and under auto (its own judgement is off with the scrub)."""
    return SCRUB_ALLOWED_TOOLS if permission_mode in (None, "bypassPermissions") else FILE_TOOLS


REVIEWER_DISALLOWED = ("Edit", "Write", "NotebookEdit")


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


# What Claude Code (2.1.197) needs to run with CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1: its Bash tool then
# runs in a sandbox. Without bwrap it refuses to start ("bubblewrap is required for subprocess env
# scrubbing"); without socat every Bash call fails ("Sandbox dependencies not available: socat not
# installed"). No scrub is better than no agent, or an agent that cannot run the tests.
SCRUB_NEEDS = (("bwrap", "bubblewrap (`bwrap`)"), ("socat", "`socat`"))


def _scrub_missing(agent: AgentConfig, path: str | None) -> list[str]:
    if agent.preset != "claude":
        return []
    return [name for exe, name in SCRUB_NEEDS if shutil.which(exe, path=path) is None]


def can_scrub(agent: AgentConfig, path: str | None = None) -> bool:
    """Whether the agent can run with CLAUDE_CODE_SUBPROCESS_ENV_SCRUB=1 (see SCRUB_NEEDS)."""
    return not _scrub_missing(agent, path)


def scrub_warning(agent: AgentConfig, path: str | None = None) -> str | None:
    """What a person should know when the agent's Bash tool will see the credentials."""
    missing = [] if SCRUB_ENV in agent.env else _scrub_missing(agent, path)
    if not missing:
        return None
    names = " and ".join(missing)
    return (
        f"{names} {'is' if len(missing) == 1 else 'are'} not installed: Claude Code needs "
        f"{'it' if len(missing) == 1 else 'them'} to keep the API credentials out of its Bash tool's environment "
        f"({SCRUB_ENV}=1), so agents run without that. Install {'it' if len(missing) == 1 else 'them'} "
        f'(e.g. `apt-get install bubblewrap socat`), or set agent.env {{"{SCRUB_ENV}": "0"}} to say so and '
        "silence this"
    )


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
    root: Path | None = None,
) -> Invocation:
    """The agent's argv, environment and stdin; `root`, the repository, holds the files settings name."""
    env = {**base_env, **agent.env, **extra_env}
    if SCRUB_ENV not in agent.env and can_scrub(agent, env.get("PATH")):
        # Claude's Bash tool then runs without the API credentials in its environment: what the
        # agent runs cannot read or leak them. agent.env may say otherwise.
        env[SCRUB_ENV] = "1"
    env.update(
        ORCHESTRATOR_MILESTONE=milestone_id,
        ORCHESTRATOR_ROLE=role,
        ORCHESTRATOR_WORKTREE=str(worktree),
        ORCHESTRATOR_PROMPT_FILE=str(prompt_file),
    )
    session_id = None
    flags = setting_args(agent, root, role)
    if agent.preset == "codex":
        argv, session_id = _codex_argv(agent, resume_session, flags)
    elif agent.preset == "claude":
        argv, session_id = _claude_argv(agent, role, resume_session, flags)
        if env.get(SCRUB_ENV) == "1" and not agent.allowed_tools:
            # With the scrub on, Claude Code forces its permission mode back to "default" ("Declare
            # allowedTools explicitly", 2.1.197): without a list, every Write is refused headless.
            argv += ("--allowedTools", *scrub_allowed_tools(agent.permission_mode))
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
        argv = _other_argv(agent, prompt_file, flags)
    if agent.preset == "gemini":
        # Every worktree is a folder gemini-cli has never seen: untrusted, it silently turns
        # --yolo back into asking for approval, which nobody answers in a headless run.
        env.setdefault("GEMINI_CLI_TRUST_WORKSPACE", "true")
    return Invocation(argv + tuple(agent.extra_args), env, prompt, agent.preset, session_id)


def _expand(arg: str, fields: Mapping[str, str]) -> str:
    for key, value in fields.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def setting_args(agent: AgentConfig, root: Path | None, role: str = "implement") -> tuple[str, ...]:
    """The agent's settings as its CLI's options, from its preset's table (orchestrator_lib/presets.py)."""
    args: list[str] = []
    for flag in presets.get(agent.preset).flags:
        value = getattr(agent, flag.key)
        if flag.key == "disallowed_tools" and role == "review" and agent.preset == "claude":
            # The reviewer reads and may run tests, but must not edit; the runner also discards
            # any change a reviewer leaves behind.
            value = (*value, *REVIEWER_DISALLOWED)
        if value is None or value == ():
            continue
        if flag.form == "values":
            args += [flag.option, *value]
        elif flag.form == "path":
            args += [flag.option, str(root / value) if root is not None else value]
        else:
            args += [flag.option, flag.value.format(_text(value))]
    return tuple(args)


def _text(value: str | float) -> str:
    return f"{value:.10g}" if isinstance(value, float) else str(value)  # 2.5, never 2.500000 or 1e+06


def _claude_argv(
    agent: AgentConfig, role: str, resume: str | None, flags: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    argv = [agent.executable or "claude", "-p", "--output-format", "stream-json", "--verbose"]
    if agent.permission_mode in (None, "bypassPermissions"):
        argv.append("--dangerously-skip-permissions")
    else:
        argv += ["--permission-mode", agent.permission_mode]
    if role == "review":
        # Its verdict can come back as structured output (orchestrator_lib.review reads it).
        argv += ["--json-schema", json.dumps(VERDICT_SCHEMA)]
    argv += flags
    if resume:
        argv += ["--resume", resume]
        return tuple(argv), resume
    session = str(uuid.uuid4())
    return (*argv, "--session-id", session), session


def _codex_argv(
    agent: AgentConfig, resume: str | None, settings: tuple[str, ...]
) -> tuple[tuple[str, ...], str | None]:
    """`codex exec`, prompt on stdin; after a setback `codex exec resume <id>` continues the
    session Codex named in its thread.started event (orchestrator_lib.limits.read_report)."""
    exe = executable_for(agent) or "codex"
    flags = ("--json", "--dangerously-bypass-approvals-and-sandbox", *settings)
    if resume:
        return (exe, "exec", "resume", *flags, resume, "-"), resume
    return (exe, "exec", *flags, "-"), None


def _other_argv(agent: AgentConfig, prompt_file: Path, settings: tuple[str, ...]) -> tuple[str, ...]:
    exe = executable_for(agent) or agent.preset
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
            *settings,
            "--message-file",
            str(prompt_file),
        )
    # gemini reads the task from stdin; -p appends this line to it.
    return (exe, "--yolo", *settings, "-p", "Carry out the task described above.")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class Launching(NamedTuple):
    """Where a new agent's launch is recorded (orchestrator_lib.launches) and what its wrapper masks."""

    path: Path  # .orchestrator/agents/<ID>-<role>-<round>.json
    milestone: str
    role: str
    round: int
    dotenv: Path


def run_agent(
    inv: Invocation,
    *,
    cwd: Path,
    log_path: Path,
    header: str,
    timeout_s: float,
    idle_s: float,
    watch: Watch,
    launching: Launching,
    clock: Callable[[], float] = time.monotonic,
) -> AgentRun:
    """Start the agent under its wrapper and follow it to the end, or kill it on timeout, idleness or stop."""
    with files.open_private(log_path, "ab") as log:
        log.write(f"\n===== {header} · {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
        offset = log.tell()
    stdin = launching.path.with_suffix(".prompt")
    with files.open_private(stdin, "w") as f:
        f.write(redact.active().mask(inv.stdin))  # as the prompt file: no secret on disk
    launch = launches.Launch(
        id=launches.new_id(),
        milestone=launching.milestone,
        role=launching.role,
        round=launching.round,
        argv=inv.argv,
        cwd=str(cwd),
        stdin=str(stdin),
        log=str(log_path),
        log_start=offset,
        dotenv=str(launching.dotenv),
        session_id=inv.session_id or "",
        launched_at=time.time(),
        runner=launches.THIS_RUNNER,
    )
    launches.record(launching.path, launch)
    faults.hit("agent-launch")
    try:
        wrapper = launches.spawn(launching.path, inv.env)
    except OSError as e:
        raise UsageError(f"cannot start the agent wrapper `{sys.executable}`: {e.strerror}") from None
    agent = _Agent(launching.path, launch, wrapper, wrapper.pid)
    now = clock()
    return _ended(
        log_path, _follow(agent, _Tail(log_path, offset, watch, clock, now), now, timeout_s, idle_s, watch, clock)
    )


def rejoin(
    path: Path,
    launch: launches.Launch,
    status: launches.Status,
    *,
    timeout_s: float,
    idle_s: float,
    watch: Watch,
    clock: Callable[[], float] = time.monotonic,
) -> AgentRun:
    """An agent a dead runner started: follow it while it runs, or read how it ended, without starting it."""
    since = time.time() - status.started  # the watchdogs count from its real start ...
    try:
        quiet = time.time() - max(os.path.getmtime(launch.log), status.started)  # ... and its last output
    except OSError:
        quiet = since
    now = clock()
    tail = _Tail(Path(launch.log), launch.log_start, watch, clock, now - max(0.0, quiet))
    agent = _Agent(path, launch, None, status.wrapper_pid)
    return _ended(Path(launch.log), _follow(agent, tail, now - max(0.0, since), timeout_s, idle_s, watch, clock))


def _ended(log_path: Path, run: AgentRun) -> AgentRun:
    """What a reader of the log asks first: how the run ended."""
    how = f"killed ({run.killed})" if run.killed else f"exit {run.returncode}"
    with files.open_private(log_path, "ab") as log:
        log.write(f"===== {how} after {run.duration:.1f}s =====\n".encode())
    return run


def _follow(
    agent: _Agent,
    tail: _Tail,
    started: float,
    timeout_s: float,
    idle_s: float,
    watch: Watch,
    clock: Callable[[], float],
) -> AgentRun:
    announced = False
    while True:
        tail.read()
        status = agent.status()
        if status is not None and status.error:
            agent.reap()
            raise UsageError(status.error)
        if status is not None and not announced:
            watch.on_start(status.agent_pid, status.agent_started or _create_time(status.agent_pid))
            announced = True
        if status is not None and status.finished:
            tail.read(until=status.log_end, final=True)
            agent.reap()
            code = status.exit_code if status.exit_code is not None else -(status.signal or 9)
            return AgentRun(code, tail.text(), None, clock() - started, status.agent_pid)
        if not agent.alive() and not _finished(agent.status()):  # gone without an exit status
            tail.read(final=True)
            return AgentRun(-9, tail.text(), None, clock() - started, status.agent_pid if status else 0)
        reason = _watchdog(tail, started, timeout_s, idle_s, watch.stop, clock)
        if reason:
            agent.kill()
            tail.read(final=True)
            return AgentRun(None, tail.text(), reason, clock() - started, status.agent_pid if status else 0)
        watch.stop.wait(_POLL_S)


def _finished(status: launches.Status | None) -> bool:
    return status is not None and status.finished


def _watchdog(
    tail: _Tail, started: float, timeout_s: float, idle_s: float, stop: threading.Event, clock: Callable[[], float]
) -> str | None:
    now = clock()
    if stop.is_set():
        return "stopped"
    if tail.ended:
        return "context"
    if now - started > timeout_s:
        return "timeout"
    if now - tail.last_activity > idle_s:
        return "idle"
    return None


class _Agent:
    """A started or adopted agent, known by its launch file and its wrapper's pid."""

    def __init__(
        self, path: Path, launch: launches.Launch, wrapper: subprocess.Popen[bytes] | None, wrapper_pid: int
    ) -> None:
        self._path = path
        self._launch = launch
        self._wrapper = wrapper  # ours to reap when we started it
        self._wrapper_pid = wrapper_pid
        self._status: launches.Status | None = None

    def status(self) -> launches.Status | None:
        if self._status is None or not self._status.finished:
            self._status = launches.read_status(self._path, self._launch) or self._status
        return self._status

    def alive(self) -> bool:
        if self._wrapper is not None:
            return self._wrapper.poll() is None
        return proc.pid_alive(self._wrapper_pid)

    def kill(self) -> None:
        launches.kill(self.status(), self._wrapper_pid)
        if self.status() is None:  # it may have started the agent meanwhile
            time.sleep(_POLL_S)
            launches.kill(self.status(), self._wrapper_pid, grace=1.0)
        self.reap()

    def reap(self) -> None:
        if self._wrapper is not None:
            try:
                self._wrapper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


class _Tail:
    """Follows the agent's output in its log and keeps a bounded tail for classification."""

    def __init__(self, path: Path, offset: int, watch: Watch, clock: Callable[[], float], last_activity: float) -> None:
        self._path = path
        self._offset = offset
        self._watch = watch
        self._clock = clock
        self._partial = b""
        self._lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
        self.last_activity = last_activity
        self.ended = ""  # why the output says the run should end

    def read(self, until: int = 0, final: bool = False) -> None:
        data = self._chunk(until)
        if data:
            self.last_activity = self._clock()
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        for raw in lines:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _chunk(self, until: int) -> bytes:
        if until and until <= self._offset:
            return b""
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read(until - self._offset if until > self._offset else -1)
        except OSError:
            return b""
        self._offset += len(data)
        return data

    def _line(self, line: str) -> None:
        self._lines.append(line[:_LINE_CHARS_KEPT])
        self._watch.on_line(line)
        end_on = self._watch.end_on
        if end_on is not None and not self.ended:
            self.ended = end_on(line) or ""

    def text(self) -> str:
        return "\n".join(self._lines)


def _create_time(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0

"""The state store: the only writer of `.orchestrator/`.

SQLite in WAL mode, one transaction per state change, so a `kill -9` at any
instant leaves either the old or the new record, never half of one. Git stays
the source of truth for what is merged; this is a cache of everything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from orchestrator_lib import faults, files, redact
from orchestrator_lib.errors import OrchestratorError, UsageError

SCHEMA_VERSION = 1
STATE_DIR = ".orchestrator"


class Status(StrEnum):
    """A milestone's status; stored, compared and shown as its plain value."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # its branch passed checks and review; merged with its stage
    FAILED = "failed"
    BLOCKED = "blocked"  # its stage's integration stopped on it
    MERGED = "merged"  # a `Milestone:` trailer on the base branch says so
    INTERRUPTED = "interrupted"


STATUSES = tuple(Status)


@dataclasses.dataclass(frozen=True)
class MilestoneState:
    id: str
    stage: int
    title: str
    status: str = Status.PENDING
    attempts: int = 0
    reason: str = ""
    branch: str = ""
    worktree: str = ""
    commit: str = ""
    merge_commit: str = ""
    session_id: str = ""
    role: str = ""
    agent_pid: int = 0
    agent_started: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    last_line: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    review_rounds: int = 0
    last_findings: tuple[str, ...] = ()
    checks: str = ""
    recoveries: int = 0
    crashes: int = 0  # failed agent runs in a row, kept across resumes (bounded by retry_attempts)
    port_base: int = 0  # its ORCHESTRATOR_PORT_BASE block, kept by a resumed run (0: none yet)
    node: str = ""  # the Ray node id it runs or ran on (executor.kind "ray"); "" on this machine
    permission_denials: tuple[str, ...] = ()  # what its agent was refused (Claude's permission_denials)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MilestoneState:
        data = _fields_of(cls, json.loads(text))
        data["last_findings"] = tuple(data.get("last_findings", ()))
        data["permission_denials"] = tuple(data.get("permission_denials", ()))
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class RunState:
    status: str = "idle"  # idle, running, interrupted, finished, failed
    pid: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    paused_until: float = 0.0
    pause_reason: str = ""
    hold_reason: str = ""
    stop_requested: str = ""  # "all" or a milestone id, written by `stop`
    message: str = ""


class StateStore:
    """Open with `StateStore.open(root)`; read-only opens never create anything."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, root: Path, readonly: bool = False) -> StateStore | None:
        path = root / STATE_DIR / "state.db"
        if readonly and not path.exists():
            return None
        if readonly:
            return cls._open_for_reading(path, root)
        return cls._open(path, readonly)

    @classmethod
    def check(cls, root: Path) -> None:
        """Read every record without writing a byte (not even SQLite's -shm file, which a plain read-only
        open of a WAL database makes): UsageError when the state is corrupt or of the wrong shape."""
        path = root / STATE_DIR / "state.db"
        # immutable: no -shm is made; only safe when no -wal holds changes not yet in the file
        immutable = "" if path.with_name(path.name + "-wal").exists() else "&immutable=1"
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro{immutable}", uri=True, timeout=10, isolation_level=None)
        except sqlite3.Error:
            raise _corrupt(path) from None
        try:
            store = cls(conn, path)
            store._prepare(readonly=True)
            store.milestones()
            store.run()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise _corrupt(path) from None
        except sqlite3.DatabaseError:
            raise _corrupt(path) from None
        finally:
            conn.close()

    @classmethod
    def _open_for_reading(cls, path: Path, root: Path) -> StateStore | None:
        # A reader (status, watch, serve) can catch the runner creating the file, before
        # its header or schema is written; that is not corruption: look again shortly.
        for _ in range(10):
            try:
                return cls._open(path, readonly=True)
            except (StateWriteError, UsageError):
                time.sleep(0.05)
        return cls._open(path, readonly=True)

    @classmethod
    def _open(cls, path: Path, readonly: bool) -> StateStore | None:
        if not readonly:
            files.private_dir(path.parent)
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None, check_same_thread=False)
            store = cls(conn, path)
            if not readonly:  # SQLite gives its -wal and -shm files the database's mode
                for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
                    files.make_private(path.with_name(name))
            store._prepare(readonly)
        except sqlite3.OperationalError as e:
            if readonly and "no such table" in str(e):
                return None  # a runner was killed while creating it: nothing recorded yet
            if "readonly" in str(e):
                raise StateWriteError(
                    f"cannot open the state {path}: it is read-only ({e}); make it writable"
                ) from None
            raise StateWriteError(f"cannot open the state {path}: {e}") from None
        except sqlite3.DatabaseError:
            raise _corrupt(path) from None
        except PermissionError as e:  # its mode cannot be set: an immutable or foreign file
            raise StateWriteError(
                f"cannot open the state {path}: it is read-only ({e.strerror}); make it writable"
            ) from None
        return store

    def _prepare(self, readonly: bool) -> None:
        if not readonly:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._tx():
                self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                self._conn.execute("CREATE TABLE IF NOT EXISTS milestones (id TEXT PRIMARY KEY, data TEXT)")
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = self._meta("schema_version")
        if version is None or not version.isdigit():
            raise _corrupt(self.path)
        if int(version) > SCHEMA_VERSION:
            raise UsageError(
                f"state written by a newer version of the orchestrator (schema {version}, this one "
                f"reads {SCHEMA_VERSION}): {self.path}; upgrade, or `clean --state` to start over "
                "(your branches are kept)"
            )

    def close(self) -> None:
        self._conn.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn, self.path)

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def milestones(self) -> dict[str, MilestoneState]:
        rows = self._conn.execute("SELECT id, data FROM milestones").fetchall()
        try:
            return {str(r[0]): MilestoneState.from_json(r[1]) for r in rows}
        except (ValueError, TypeError):
            raise _corrupt(self.path) from None

    def get(self, milestone_id: str) -> MilestoneState | None:
        return self.milestones().get(milestone_id)

    def put(self, *records: MilestoneState) -> None:
        with self._tx():
            for record in map(scrub, records):
                self._conn.execute("INSERT OR REPLACE INTO milestones VALUES (?, ?)", (record.id, record.to_json()))

    def run(self) -> RunState:
        text = self._meta("run")
        if not text:
            return RunState()
        try:
            return RunState(**_fields_of(RunState, json.loads(text)))
        except (ValueError, TypeError):
            raise _corrupt(self.path) from None

    def put_run(self, run: RunState) -> None:
        run = scrub(run)
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('run', ?)", (json.dumps(dataclasses.asdict(run)),))

    def update_run(self, **changes: Any) -> RunState:
        run = dataclasses.replace(self.run(), **changes)
        self.put_run(run)
        return run


class Ownership:
    """What the runner made in this repository: branches and worktrees. `clean` touches nothing else.

    Its own file, kept by `clean --state`, so forgetting the state does not turn
    the runner's branches into the user's. Each call opens its own connection: worker threads
    record the worktrees they add while the main thread writes the state.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / STATE_DIR / "owned.db"

    def add(self, kind: str, name: str) -> None:
        """Record `name` (before it is made: a kill in between leaves a record of nothing, never the reverse)."""
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO owned VALUES (?, ?, ?)", (kind, name, time.time()))

    def drop(self, kind: str, name: str) -> None:
        if self.path.exists():
            with self._write() as conn:
                conn.execute("DELETE FROM owned WHERE kind = ? AND name = ?", (kind, name))

    def names(self, kind: str) -> list[str]:
        """Recorded names of `kind`; a missing or unreadable record owns nothing."""
        if not self.path.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
            try:
                return [str(r[0]) for r in conn.execute(_NEWEST, (kind,)).fetchall()]
            finally:
                conn.close()
        except sqlite3.Error:
            return []

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            files.open_private(self.path, "a").close()  # 0600 from the start; SQLite's journal takes its mode
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS owned (kind TEXT, name TEXT, at REAL, PRIMARY KEY (kind, name))"
                )
                yield conn
                conn.execute("COMMIT")
            finally:
                conn.close()  # an uncommitted transaction is rolled back
        except (sqlite3.Error, OSError) as e:
            raise StateWriteError(f"cannot record what the runner made in {self.path}: {e}") from None


_OWNED_TABLE = "CREATE TABLE IF NOT EXISTS owned (kind TEXT, name TEXT, at REAL, PRIMARY KEY (kind, name))"
_NEWEST = "SELECT name FROM owned WHERE kind = ? ORDER BY at DESC"


class StateWriteError(OrchestratorError):
    """A change could not be written (a full disk, most likely); every earlier one is kept."""


class _Transaction:
    """One state change: all of it commits, or none of it (a failed COMMIT is rolled back)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise self._failed(e) from e

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            try:
                faults.hit("state-write")
                self._conn.execute("COMMIT")
                return
            except (sqlite3.Error, OSError) as e:
                exc = e
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        if isinstance(exc, (sqlite3.OperationalError, OSError)):
            raise self._failed(exc) from exc

    def _failed(self, e: BaseException) -> StateWriteError:
        if "readonly" in str(e).replace("-", "").replace(" ", "").lower():
            return StateWriteError(
                f"cannot write the state to {self._path}: the state database is read-only ({e}); make it and "
                f"its folder writable (chmod u+w), then continue with `python orchestrator.py --resume`"
            )
        return StateWriteError(
            f"cannot write the state to {self._path}: {e}. Everything recorded before is kept; free some disk "
            "space, then continue with `python orchestrator.py --resume`"
        )


_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "tuple[str, ...]": (list,)}


def _fields_of(cls: type[Any], data: Any) -> dict[str, Any]:
    """The known fields of a stored record; TypeError when one has the wrong type (a record of
    another shape must read as corrupt, not crash the run half-way)."""
    if not isinstance(data, dict):
        raise TypeError(f"a record must be an object, not {type(data).__name__}")
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = {k: v for k, v in data.items() if k in fields}
    for key, value in out.items():
        kind = fields[key]
        if isinstance(value, bool) or not isinstance(value, _TYPES[kind]):
            raise TypeError(f"{key} must be {kind}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise TypeError(f"{key} must hold strings")
    return out


def _corrupt(path: Path) -> UsageError:
    return UsageError(f"state is corrupt: {path}; `clean --state` starts over, your branches are kept")


_Record = TypeVar("_Record", MilestoneState, RunState)


def scrub(record: _Record) -> _Record:
    """Agent output and titles reach every view through the state: no secret, no escape code in it."""
    clean = redact.active().clean
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, str) and value:
            changes[f.name] = clean(value)
        elif isinstance(value, tuple):
            changes[f.name] = tuple(clean(v) if isinstance(v, str) else v for v in value)
    return dataclasses.replace(record, **changes)


def update(record: MilestoneState, **changes: Any) -> MilestoneState:
    return dataclasses.replace(record, **changes)

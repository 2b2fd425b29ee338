"""Secrets out of everything the runner writes or shows; control sequences out of the terminal.

Standard library only: the agent wrapper process imports this module on its own.

A `Redactor` knows three kinds of secret: every value in `.env`, every value of an environment
variable whose name looks secret (`*_KEY`, `*_TOKEN`, `*_SECRET`, `*PASSWORD*`, ...), and the
shapes of well-known keys (`sk-ant-...`, `ghp_...`, `AKIA...`). Values shorter than
`MIN_LENGTH` are not masked: `DEBUG=1` must not turn every "1" into a marker.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, TextIO

MIN_LENGTH = 8
DOTENV_MARKER = "[value from .env]"
SECRET_MARKER = "[secret]"

# Names whose values are masked. SECRET/TOKEN/PASSWORD anywhere; KEY as a word of the name
# (ANTHROPIC_API_KEY, KEY, AWS_SECRET_ACCESS_KEY) so MONKEYPATCH or KEYBOARD do not count.
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|(?:^|_)(?:API_?)?KEYS?(?:$|_)|(?:^|_)AUTH$",
    re.IGNORECASE,
)

# Shapes of well-known keys, named for the scanner's message. Each starts with one plain
# character: the boundary check goes after it (see _compile).
_SHAPES: tuple[tuple[str, str], ...] = (
    ("an Anthropic API key", r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    ("an API key (sk-...)", r"sk-[A-Za-z0-9_\-]{16,}"),
    ("a GitHub token", r"gh[pousr]_[A-Za-z0-9]{20,}"),
    ("a GitHub token", r"github_pat_[A-Za-z0-9_]{20,}"),
    ("an AWS access key", r"A(?:KIA|SIA)[0-9A-Z]{16}"),
    ("a Slack token", r"xox[bpoas]-[A-Za-z0-9\-]{10,}"),
)
# Not inside a longer word: `task-...` does not hold `sk-...`. Checked after the shape's first
# character, as a two-character look-behind: a look-behind in front of the alternation would
# stop `re` from skipping ahead to the possible first characters (ten times slower per line).
_BOUNDARY = r"(?<![A-Za-z0-9_\-].)"


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    return bool(_SECRET_NAME.search(name))


class Leak(NamedTuple):
    """One secret found in a text: where, what kind, and the line with it masked."""

    line: int  # 1-based
    column: int  # 1-based
    kind: str
    masked_line: str


@dataclass(frozen=True)
class Redactor:
    """Immutable; build it once with `from_environment` and share it between threads."""

    values: Mapping[str, str] = field(default_factory=dict)  # literal value -> what it is
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "_pattern", _compile(self.values))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> Redactor:
        values: dict[str, str] = {}
        for name, value in environ.items():
            if looks_secret(name):
                _add(values, value, f"the value of ${name}")
        for name, maybe in dotenv.items():
            _add(values, maybe or "", f"a value from .env ({name})")
        return cls(values)

    def mask(self, text: str) -> str:
        """`text` with every secret replaced by a marker that says what kind it was."""
        if not text:
            return text
        return self._pattern.sub(self._marker, text)

    def clean(self, text: str) -> str:
        """For the terminal, TASKS.md and JSON: control sequences stripped, then secrets masked.

        Stripping first, so an escape code inside a key cannot hide it from the mask.
        """
        return self.mask(strip_controls(text))

    def find(self, text: str) -> list[Leak]:
        """Every secret in `text`, in order, for the scan of an agent's files."""
        leaks = []
        for number, line in enumerate(text.splitlines(), 1):
            for match in self._pattern.finditer(line):
                kind = self._kind(match)
                leaks.append(Leak(number, match.start() + 1, kind, self.mask(line).strip()[:200]))
        return leaks

    def _marker(self, match: re.Match[str]) -> str:
        kind = self.values.get(match.group(0))
        return DOTENV_MARKER if kind is not None and kind.startswith("a value from .env") else SECRET_MARKER

    def _kind(self, match: re.Match[str]) -> str:
        found = match.group(0)
        if found in self.values:
            return self.values[found]
        return next((name for name, shape in _SHAPES if re.fullmatch(shape, found)), "a secret")


def _add(values: dict[str, str], value: str, kind: str) -> None:
    value = value.strip()
    if len(value) < MIN_LENGTH:
        return
    values.setdefault(value, kind)
    escaped = json.dumps(value)[1:-1]  # as it appears inside an agent's JSON output
    if escaped != value:
        values.setdefault(escaped, kind)


def _compile(values: Iterable[str]) -> re.Pattern[str]:
    """One alternation: the literal values, grouped by first character, then the key shapes.

    Longest literal first, so a value that contains another is masked whole. The grouping lets
    `re` reject a position on its first character instead of trying every value there (a
    flat alternation of 40 values is three times slower; bench/redact_mask.py).
    """
    groups: dict[str, list[str]] = {}
    for value in sorted(values, key=len, reverse=True):
        groups.setdefault(value[0], []).append(re.escape(value[1:]))
    literals = [f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in groups.items()]
    shapes = [shape[0] + _BOUNDARY + shape[1:] for _, shape in _SHAPES]
    return re.compile("|".join([*literals, *shapes]))


# ------------------------------------------------------------------ terminal control sequences

# CSI (ESC [ or the 8-bit 0x9b) with its parameters; OSC, DCS, SOS, PM, APC strings up to
# BEL or ST; any other two-byte ESC sequence; then every C0 control but tab and newline,
# DEL and the C1 controls.
_CONTROLS = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def strip_controls(text: str) -> str:
    """`text` without escape sequences or control characters (tab and newline stay)."""
    return _CONTROLS.sub("", text)


def strip_line(text: str) -> str:
    """One line for the terminal or a table cell: controls stripped, line breaks as spaces."""
    return strip_controls(text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))


EMPTY = Redactor()  # still masks the well-known key shapes


# ------------------------------------------------------------------ the process's redactor

# One per process, installed once at start (like the logging configuration): state writes,
# views, notifications and the terminal streams all read it, so no writer can forget it.
_active: list[Redactor] = [EMPTY]


def install(redactor: Redactor) -> None:
    _active[0] = redactor


def active() -> Redactor:
    return _active[0]


class MaskingFormatter(logging.Formatter):
    """Log records, tracebacks included, with secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return active().mask(super().format(record))


class MaskingStream(io.TextIOBase):
    """sys.stdout/sys.stderr for the runner's own output: secrets masked; with `plain`, no escape codes."""

    def __init__(self, stream: TextIO, plain: bool) -> None:
        super().__init__()
        self.stream = stream
        self.plain = plain

    def write(self, text: str) -> int:
        shown = strip_controls(text) if self.plain else text
        self.stream.write(active().mask(shown))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def masked_terminal(no_color: bool) -> Iterator[None]:
    """Route stdout and stderr through MaskingStream; plain (no escape codes) unless a colour terminal."""
    saved = sys.stdout, sys.stderr
    plain = no_color or bool(os.environ.get("NO_COLOR"))
    sys.stdout = MaskingStream(saved[0], plain or not _isatty(saved[0]))
    sys.stderr = MaskingStream(saved[1], plain or not _isatty(saved[1]))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

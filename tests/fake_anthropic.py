"""A fake Anthropic Messages API on 127.0.0.1 that the real Claude Code CLI accepts.

Stdlib only. Tests script the model's turns per working directory::

    with FakeAnthropic() as server:
        server.add_script([write("hello.txt", "hi\\n"), text("Done")], cwd_contains="1A")
        env = claude_env(server, tmp_path / "scratch")
        ...run `claude -p` with env in a directory whose path contains "1A"...

"Main" requests are the ones that carry tools (the agent loop); each takes the next
item of the first script whose `cwd_contains` is part of the request's
`Primary working directory:` (longest match first, then the catch-all `None`).
Side requests without tools get a short text and consume nothing. An empty
script answers "Done." with stop_reason end_turn.
"""

from __future__ import annotations

import collections
import json
import os
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

# Obviously fake credentials: nothing real-looking may appear in tests.
FAKE_API_KEY = "test-key-not-secret"
FAKE_OAUTH_TOKEN = "test-oauth-token-not-secret"
SIDE_REPLY = "OK"
EMPTY_SCRIPT_REPLY = "Done."

_CWD_RE = re.compile(r"Primary working directory: ([^\n]+)")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class RecordedRequest(NamedTuple):
    """One request as received; header names are lower-cased, body is parsed JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    cwd: str | None
    received_at: float  # time.monotonic()

    @property
    def is_main(self) -> bool:
        """A request of the agent loop: it carries the CLI's tools."""
        return isinstance(self.body, dict) and bool(self.body.get("tools"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []


class TextBlock(NamedTuple):
    text: str


class ToolUseBlock(NamedTuple):
    name: str
    make_input: Callable[[str], dict[str, Any]]  # the request's cwd -> tool input


class Reply(NamedTuple):
    blocks: tuple[TextBlock | ToolUseBlock, ...]
    headers: tuple[tuple[str, str], ...] = ()  # sent with this answer, after the server's own
    input_tokens: int | None = None  # reported usage; None: the server's setting, else an estimate


class ErrorReply(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...]


class Stall(NamedTuple):
    seconds: float


class Respond(NamedTuple):
    fn: Callable[[RecordedRequest], Item]


Item = Reply | ErrorReply | Stall | Respond


def text(s: str) -> Reply:
    return Reply((TextBlock(s),))


def tool_use(name: str, tool_input: Mapping[str, Any]) -> Reply:
    return Reply((ToolUseBlock(name, lambda _cwd: dict(tool_input)),))


def write(relpath: str, content: str) -> Reply:
    """A Write tool call for `<request cwd>/<relpath>`."""

    def make_input(cwd: str) -> dict[str, Any]:
        return {"file_path": os.path.join(cwd, relpath), "content": content}

    return Reply((ToolUseBlock("Write", make_input),))


def bash(command: str) -> Reply:
    return tool_use("Bash", {"command": command, "description": "Run a command"})


def turn(*replies: Reply) -> Reply:
    """One assistant message made of several blocks, e.g. `turn(text(..), write(..))`."""
    return Reply(tuple(block for reply in replies for block in reply.blocks))


def error(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    error_type: str | None = None,
) -> ErrorReply:
    kind = error_type or _ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return ErrorReply(status, body, tuple((headers or {}).items()))


def usage_limit(reset_epoch: int, claim: str = "five_hour") -> ErrorReply:
    """A subscriber usage limit; claim "five_hour" reads "session limit", "seven_day" "weekly limit"."""
    headers = {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(reset_epoch),
        "anthropic-ratelimit-unified-representative-claim": claim,
    }
    return error(429, "Rate limited", headers)


def charged(reply: Reply, input_tokens: int) -> Reply:
    """`reply` reporting `input_tokens` prompt tokens: the CLI prices its total_cost_usd from them."""
    return reply._replace(input_tokens=input_tokens)


def warned(reply: Reply, utilization: float, reset_epoch: int, window: str = "5h") -> Reply:
    """`reply` sent with the headers that make the CLI report a usage warning (see usage_warning)."""
    return reply._replace(headers=reply.headers + tuple(usage_warning(utilization, reset_epoch, window).items()))


def usage_warning(utilization: float, reset_epoch: int, window: str = "5h") -> dict[str, str]:
    """Headers of a successful answer saying a subscriber is near a usage limit.

    What Claude Code 2.1.197 does with them (read in its bundled header parser, then run by hand
    against this server; test_fake_anthropic.py keeps it checked):
    - only with CLAUDE_CODE_OAUTH_TOKEN; with an API key the headers are ignored;
    - `anthropic-ratelimit-unified-status` "allowed" or "allowed_warning" (missing reads as allowed),
      then a `-{5h,7d}-surpassed-threshold` header makes it report that window's `-utilization`
      and `-reset` (epoch seconds) as status "allowed_warning", rateLimitType five_hour / seven_day,
      surpassedThreshold; without that header it warns only past its own thresholds (5h:
      utilization >= 0.9 with at most 72 % of the window gone, 7d: three steps), else "allowed";
    - in stream-json a `rate_limit_event` is printed when that state changes, not on every answer
      (answers at 0.96, 0.96, 0.97 in one run: two events); a plain `{"status": "allowed"}` event comes
      first when the answer has unified headers but no warning.
    """
    return {
        "anthropic-ratelimit-unified-status": "allowed_warning",
        f"anthropic-ratelimit-unified-{window}-utilization": f"{utilization:g}",
        f"anthropic-ratelimit-unified-{window}-reset": str(reset_epoch),
        f"anthropic-ratelimit-unified-{window}-surpassed-threshold": f"{utilization:g}",
    }


def overloaded() -> ErrorReply:
    return error(529, "Overloaded")


def rate_limited(retry_after: int | None = None) -> ErrorReply:
    """A plain organisation rate limit (not a usage limit). retry_after > 60 stops CLI retries."""
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    message = "This request would exceed the rate limit for your organization (fake)."
    return error(429, message, headers)


def unauthorized() -> ErrorReply:
    return error(401, "invalid x-api-key")


def stall(seconds: float) -> Stall:
    """Send 200, headers and message_start, then hold the stream silently.

    The hold ends after `seconds`, on stop(), or when the client disconnects. A
    stream closed this way is not an error to the CLI: it re-sends the request
    without streaming (even with CLAUDE_CODE_MAX_RETRIES=0) and the next item answers.
    """
    return Stall(seconds)


def respond(fn: Callable[[RecordedRequest], Item]) -> Respond:
    return Respond(fn)


def parse_cwd(body: Any) -> str | None:
    """The `Primary working directory:` the CLI puts in its system prompt."""
    if not isinstance(body, dict):
        return None
    for part in (body.get("system"), body.get("messages")):
        for s in _strings(part):
            match = _CWD_RE.search(s)
            if match:
                return match.group(1).strip()
    return None


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def claude_env(server: FakeAnthropic, scratch: Path, oauth: bool = False, max_retries: int = 0) -> dict[str, str]:
    """A complete, private environment for one `claude` run against `server`.

    HOME and TMPDIR live under `scratch` because the CLI writes ~/.claude.json,
    ~/.claude/ and $TMPDIR/claude-<uid>; nothing of the real user's is inherited
    except PATH. `oauth` makes the CLI behave as a subscriber (usage limits).
    Override env["TZ"] to see reset times in another zone.
    """
    home, tmp = scratch / "home", scratch / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    credential = {"CLAUDE_CODE_OAUTH_TOKEN": FAKE_OAUTH_TOKEN} if oauth else {"ANTHROPIC_API_KEY": FAKE_API_KEY}
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "ANTHROPIC_BASE_URL": server.url,
        **credential,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
        "IS_SANDBOX": "1",  # lets root use --dangerously-skip-permissions
        "TZ": "UTC",  # usage-limit texts name the zone: "resets 8:18am (UTC)"
    }


class FakeAnthropic:
    """The server: a context manager, or start() / stop(). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str | None, collections.deque[Item]] = {}
        self._busy = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._answer_headers: dict[str, str] = {}
        self._input_tokens: int | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, release stalled streams and wait (bounded) for every handler."""
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)
        self._httpd = None
        if not self.wait_idle(timeout):
            raise RuntimeError(f"fake Anthropic handlers still busy {timeout}s after stop()")

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_main]

    def add_script(self, items: Iterable[Item], cwd_contains: str | None = None) -> None:
        """Queue answers for main requests whose cwd contains `cwd_contains` (None: any)."""
        with self._lock:
            self._scripts.setdefault(cwd_contains, collections.deque()).extend(items)

    def set_answers(self, headers: Mapping[str, str] | None = None, input_tokens: int | None = None) -> None:
        """What every later successful answer carries: extra headers (e.g. usage_warning(...)) and
        the prompt tokens it reports (None: an estimate from the request's size). A Reply's own
        headers and input_tokens win over these."""
        with self._lock:
            self._answer_headers = dict(headers or {})
            self._input_tokens = input_tokens

    def _answer_settings(self, reply: Reply) -> tuple[tuple[tuple[str, str], ...], int | None]:
        with self._lock:
            headers = {**self._answer_headers, **dict(reply.headers)}
            tokens = self._input_tokens if reply.input_tokens is None else reply.input_tokens
        return tuple(headers.items()), tokens

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        """Wait until `predicate(requests)` holds; False after `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._requests), timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being handled (e.g. a stall saw its client go)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._busy == 0, timeout)

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _set_busy(self, delta: int) -> None:
        with self._changed:
            self._busy += delta
            self._changed.notify_all()

    def _next_item(self, request: RecordedRequest) -> Item:
        if not request.is_main:
            return text(SIDE_REPLY)
        with self._lock:
            for queue in self._queues_for(request.cwd or ""):
                if queue:
                    return queue.popleft()
        return text(EMPTY_SCRIPT_REPLY)

    def _queues_for(self, cwd: str) -> list[collections.deque[Item]]:
        keys = sorted(
            (k for k in self._scripts if k is not None and k in cwd),
            key=len,
            reverse=True,
        )
        return [self._scripts[k] for k in keys] + [self._scripts.get(None, collections.deque())]


def render(reply: Reply, request: RecordedRequest, input_tokens: int | None = None) -> dict[str, Any]:
    """The complete Messages API message for `reply`, with usage for cost accounting."""
    content: list[dict[str, Any]] = []
    for block in reply.blocks:
        if isinstance(block, TextBlock):
            content.append({"type": "text", "text": block.text})
        else:
            tool_input = block.make_input(request.cwd or "")
            tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": block.name,
                    "input": tool_input,
                }
            )
    stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": request.body.get("model", "claude-fake"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": _estimate_tokens(request.body) if input_tokens is None else input_tokens,
            "output_tokens": _estimate_tokens(content),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def sse_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server-sent events that stream `message`."""
    yield "message_start", {"type": "message_start", "message": _opening(message)}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            start, delta = (
                {**block, "text": ""},
                {"type": "text_delta", "text": block["text"]},
            )
        else:
            start = {**block, "input": {}}
            delta = {
                "type": "input_json_delta",
                "partial_json": json.dumps(block["input"]),
            }
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        yield (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    closing = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    yield "message_delta", {"type": "message_delta", "delta": closing, "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def _opening(message: dict[str, Any]) -> dict[str, Any]:
    usage = {**message["usage"], "output_tokens": 1}
    return {**message, "content": [], "stop_reason": None, "usage": usage}


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _estimate_tokens(obj: Any) -> int:
    return max(1, len(json.dumps(obj)) // 4)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # a connection that never sends a request must not pin a thread

    def handle(self) -> None:
        self.server.fake._set_busy(+1)
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client went away (a killed CLI): nothing to answer
        finally:
            self.server.fake._set_busy(-1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: every request is recorded instead

    def do_HEAD(self) -> None:
        self._record(None)
        self._send_json(200, {}, head_only=True)

    def do_GET(self) -> None:
        self._record(None)
        self._send_json(200, {})

    def do_POST(self) -> None:
        request = self._record(_parse_json(self._read_body()))
        path = self.path.split("?")[0]
        if not isinstance(request.body, dict):
            self._send_item(error(400, "The body must be a JSON object"), request)
        elif path.endswith("/count_tokens"):
            self._send_json(200, {"input_tokens": _estimate_tokens(request.body)})
        elif path == "/v1/messages":
            self._send_item(self.server.fake._next_item(request), request)
        else:
            self._send_item(error(404, f"Not found: {path}"), request)

    def _record(self, body: Any) -> RecordedRequest:
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.command, self.path, headers, body, parse_cwd(body), time.monotonic())
        self.server.fake._record(request)
        return request

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass  # trailers
        return b"".join(chunks)

    def _send_item(self, item: Item, request: RecordedRequest) -> None:
        while isinstance(item, Respond):
            item = item.fn(request)
        if isinstance(item, ErrorReply):
            self._send_json(item.status, item.body, extra_headers=item.headers)
        elif isinstance(item, Stall):
            self._stall(item.seconds, request)
        else:
            headers, tokens = self.server.fake._answer_settings(item)
            if request.body.get("stream"):
                self._send_stream(sse_events(render(item, request, tokens)), headers)
            else:
                self._send_json(200, render(item, request, tokens), extra_headers=headers)

    def _send_json(
        self,
        status: int,
        body: Any,
        extra_headers: Iterable[tuple[str, str]] = (),
        head_only: bool = False,
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self._send_common_headers("application/json", extra_headers)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head_only:
            self.wfile.write(payload)

    def _send_stream(
        self, events: Iterable[tuple[str, dict[str, Any]]], extra_headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send_response(200)
        self._send_common_headers("text/event-stream", extra_headers)
        self.end_headers()  # no length: the body ends when the connection closes
        for name, data in events:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

    def _send_common_headers(self, content_type: str, extra_headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for name, value in extra_headers:
            self.send_header(name, value)
        self.close_connection = True

    def _stall(self, seconds: float, request: RecordedRequest) -> None:
        opening = _opening(render(text(""), request))
        self._send_stream([("message_start", {"type": "message_start", "message": opening})])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._client_gone():
            if self.server.fake._stopping.wait(0.1):
                break

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

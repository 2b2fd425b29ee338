"""A fake OpenAI API on 127.0.0.1 that the real Codex CLI (Responses API) and the real Aider
(Chat Completions through litellm) accept. Stdlib only.

Tests script the model's turns, optionally per working directory::

    with FakeOpenAI() as server:
        server.add_script([shell("printf 'hi\\n' > hello.txt"), say("Done")], cwd_contains="1A")

Codex gets `shell(...)` as a call of its shell tool, then `say(...)` as the final message.
Aider gets the text of a reply as the assistant's answer (whole-file edits: `whole_file(...)`).
An empty script answers "Done.". `error(...)` answers with an HTTP error instead.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self

FAKE_OPENAI_KEY = "test-openai-key-not-secret"
MODEL = "gpt-fake"
EMPTY_SCRIPT_REPLY = "Done."
INPUT_TOKENS, CACHED_TOKENS, OUTPUT_TOKENS = 1200, 200, 34  # what every answer reports as usage

_CWD_RES = (re.compile(r"<cwd>([^<]+)</cwd>"), re.compile(r"Primary working directory: ([^\n]+)"))


class RecordedRequest(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float

    @property
    def text(self) -> str:
        return json.dumps(self.body)

    @property
    def cwd(self) -> str | None:
        return _cwd_of(self.body)


class Say(NamedTuple):
    text: str


class Shell(NamedTuple):
    command: str


class Error(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...]


class Respond(NamedTuple):
    fn: Callable[[RecordedRequest], Say | Shell | Error]  # runs in the server's thread; may wait


Item = Say | Shell | Error | Respond


def say(text: str) -> Say:
    return Say(text)


def shell(command: str) -> Shell:
    """Codex: a call of its shell tool running `command` with bash in the task's folder."""
    return Shell(command)


def whole_file(path: str, content: str, note: str = "Here is the file.") -> Say:
    """Aider's whole-file edit format: the path on its own line, then the whole file fenced."""
    return Say(f"{note}\n\n{path}\n```\n{content}```\n")


def error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> Error:
    kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": code or kind}}
    return Error(status, body, tuple((headers or {}).items()))


def respond(fn: Callable[[RecordedRequest], Say | Shell | Error]) -> Respond:
    return Respond(fn)


def gemini_error(status: int, message: str, state: str, reason: str = "") -> Error:
    """An error as the Gemini API words it (google.rpc.Status)."""
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}] if reason else []
    return Error(status, {"error": {"code": status, "message": message, "status": state, "details": details}}, ())


def rate_limited() -> Error:
    return error(429, f"Rate limit reached for {MODEL} (fake). Please try again in 1s.")


def unauthorized() -> Error:
    return error(401, "Incorrect API key provided: test-ope***cret.", code="invalid_api_key")


class FakeOpenAI:
    """Serves /v1/responses (SSE) and /v1/chat/completions (SSE or JSON) from scripts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str | None, collections.deque[Item]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.default: Item | None = None  # answers every request when the scripts are empty
        self.stopping = threading.Event()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def outside_requests(self) -> list[RecordedRequest]:
        """Requests that came through the server as a proxy: CONNECT host:443 or GET http://host/…"""
        return [r for r in self.requests if r.method == "CONNECT" or r.path.startswith("http")]

    @property
    def proxy(self) -> str:
        return self.url.removesuffix("/v1")

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith(_MODEL_PATHS)]

    def add_script(self, items: Iterable[Item], cwd_contains: str | None = None) -> None:
        with self._lock:
            self._scripts.setdefault(cwd_contains, collections.deque()).extend(items)

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self.requests):
            if time.monotonic() > deadline or self.stopping.is_set():
                return False
            time.sleep(0.02)
        return True

    def stall(self, seconds: float) -> Respond:
        """Hold the answer (headers never sent) for `seconds` or until the server stops."""

        def hold(_request: RecordedRequest) -> Say:
            self.stopping.wait(seconds)
            return Say(EMPTY_SCRIPT_REPLY)

        return Respond(hold)

    def next_item(self, request: RecordedRequest) -> Say | Shell | Error:
        item = self._take(request)
        return item.fn(request) if isinstance(item, Respond) else item

    def _take(self, request: RecordedRequest) -> Item:
        cwd = request.cwd or request.text  # gemini-cli names its folder in free text
        with self._lock:
            self._requests.append(request)
            keys = sorted((k for k in self._scripts if k and k in cwd), key=len, reverse=True)
            for key in (*keys, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return self.default or Say(EMPTY_SCRIPT_REPLY)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


_MODEL_PATHS = ("/responses", "/chat/completions", ":generateContent", ":streamGenerateContent")


def gemini_answer(item: Say | Shell) -> dict[str, Any]:
    """Gemini's generateContent answer: a text part, or a call of gemini-cli's shell tool."""
    if isinstance(item, Shell):
        part: dict[str, Any] = {"functionCall": {"name": "run_shell_command", "args": {"command": item.command}}}
    else:
        part = {"text": item.text}
    usage = {
        "promptTokenCount": INPUT_TOKENS,
        "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    candidate = {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": MODEL}


def _cwd_of(body: Any) -> str | None:
    text = json.dumps(body)
    for pattern in _CWD_RES:
        found = pattern.search(text.replace("\\n", "\n"))
        if found:
            return found.group(1).strip()
    return None


def _usage_responses() -> dict[str, Any]:
    return {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }


def responses_events(item: Say | Shell, tools: list[str]) -> Iterator[dict[str, Any]]:
    """The Responses API stream for one answer: created, the output item, completed."""
    response_id = f"resp_{uuid.uuid4().hex[:12]}"
    yield {"type": "response.created", "response": {"id": response_id}}
    if isinstance(item, Shell):
        name = next((t for t in ("shell", "exec_command", "container.exec") if t in tools), "shell")
        arguments = {"command": ["bash", "-lc", item.command]} if name != "exec_command" else {"cmd": item.command}
        output = {
            "type": "function_call",
            "id": f"fc_{uuid.uuid4().hex[:12]}",
            "call_id": f"call_{uuid.uuid4().hex[:12]}",
            "name": name,
            "arguments": json.dumps(arguments),
        }
    else:
        output = {
            "type": "message",
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "role": "assistant",
            "content": [{"type": "output_text", "text": item.text, "annotations": []}],
        }
    yield {"type": "response.output_item.done", "output_index": 0, "item": output}
    yield {"type": "response.completed", "response": {"id": response_id, "usage": _usage_responses()}}


def _tool_names(body: Any) -> list[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    return [str(t.get("name") or t.get("type")) for t in tools or [] if isinstance(t, dict)]


def chat_completion(item: Say, stream: bool) -> Iterator[dict[str, Any]]:
    """Chat Completions: one JSON object, or chunks for a stream (the last carries usage)."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": MODEL}
    usage = {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    if not stream:
        message = {"role": "assistant", "content": item.text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        yield {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return
    chunk = {**base, "object": "chat.completion.chunk"}
    yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": item.text}}]}
    yield {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield {**chunk, "choices": [], "usage": usage}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            fake.record(RecordedRequest("GET", self.path, self._headers(), None, time.monotonic()))
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]})

        def do_CONNECT(self) -> None:
            # Pointed at as HTTPS_PROXY, the server sees every request that would leave the machine.
            fake.record(RecordedRequest("CONNECT", self.path, self._headers(), None, time.monotonic()))
            self._json(403, {"error": {"message": "no outside requests in tests", "type": "forbidden"}})

        def do_POST(self) -> None:
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the CLI was killed (a stopped task) while it waited for this answer

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = RecordedRequest("POST", self.path, self._headers(), body, time.monotonic())
            path = self.path.split("?")[0]
            if path.endswith(":countTokens"):
                fake.record(request)
                self._json(200, {"totalTokens": INPUT_TOKENS})
                return
            if not path.endswith(_MODEL_PATHS):
                fake.record(request)
                self._json(404, {"error": {"message": f"no such path {path}", "type": "not_found"}})
                return
            item = fake.next_item(request)
            if isinstance(item, Error):
                self._json(item.status, item.body, item.headers)
            elif path.endswith(":streamGenerateContent"):
                self._stream([gemini_answer(item)], typed=False, done=False)
            elif path.endswith(":generateContent"):
                self._json(200, gemini_answer(item))
            elif path.endswith("/responses"):
                self._stream(responses_events(item, _tool_names(body)), typed=True)
            else:
                stream = bool(isinstance(body, dict) and body.get("stream"))
                text_item = item if isinstance(item, Say) else Say(EMPTY_SCRIPT_REPLY)
                answers = chat_completion(text_item, stream)
                if stream:
                    self._stream(answers, typed=False)
                else:
                    self._json(200, next(answers))

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def _json(self, status: int, body: dict[str, Any], headers: Iterable[tuple[str, str]] = ()) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: Iterable[dict[str, Any]], typed: bool, done: bool = True) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            for event in events:
                head = f"event: {event['type']}\n" if typed else ""
                self.wfile.write(f"{head}data: {json.dumps(event)}\n\n".encode())
            if done and not typed:
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler

"""`serve`: read-only HTTP status on 127.0.0.1 for other tools (same data as `status --json`)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from orchestrator_lib import redact, render
from orchestrator_lib.errors import OrchestratorError, UsageError

PATHS = ("/health", "/api/milestones", "/api/milestones/<ID>")


def make_server(snapshot: Callable[[], render.Snapshot], port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self._from_loopback_name():
                return
            try:
                body = route(self.path, snapshot)
            except OrchestratorError as e:  # e.g. the state is corrupt: say so, keep serving
                self._send(500, {"error": str(e)})
                return
            if body is None:
                self._send(404, {"error": f"no such path: {self.path}", "paths": list(PATHS)})
            else:
                self._send(200, body)

        def _refuse(self) -> None:
            if self._from_loopback_name():
                self._send(405, {"error": "read-only: only GET is allowed"}, {"Allow": "GET"})

        def _from_loopback_name(self) -> bool:
            # DNS rebinding: a web page whose name now resolves to 127.0.0.1 reaches this port,
            # but its requests still carry that name in Host.
            if is_loopback_host(self.headers.get("Host")):
                return True
            self._send(403, {"error": "forbidden: the Host header must be localhost or a loopback address"})
            return False

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

        def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = redact.active().mask(json.dumps(body)).encode()
            self.send_response(code)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    try:
        return ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except (OSError, OverflowError) as e:
        why = getattr(e, "strerror", None) or e
        raise UsageError(f"cannot serve on 127.0.0.1:{port}: {why}; pick another port with --port N") from None


def is_loopback_host(header: str | None) -> bool:
    """Whether a Host header names localhost, 127.0.0.0/8 or [::1], with or without a port."""
    host = (header or "").strip().lower()
    if host.startswith("["):  # [::1] or [::1]:8080
        name, _, rest = host[1:].partition("]")
        port_ok = rest == "" or (rest.startswith(":") and rest[1:].isdigit())
    else:
        name, colon, port = host.partition(":")
        port_ok = not colon or port.isdigit()
    if not port_ok or not name:
        return False
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def route(path: str, snapshot: Callable[[], render.Snapshot]) -> Any | None:
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if path == "/health":
        return {"ok": True}
    if path == "/api/milestones":
        return render.status_json(snapshot())
    if path.startswith("/api/milestones/"):
        wanted = path.removeprefix("/api/milestones/")
        found = [m for m in render.status_json(snapshot())["milestones"] if m["id"] == wanted]
        return found[0] if found else None
    return None


def serve(snapshot: Callable[[], render.Snapshot], port: int) -> int:
    server = make_server(snapshot, port)
    print(
        f"serving read-only status on http://127.0.0.1:{server.server_address[1]}/api/milestones (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

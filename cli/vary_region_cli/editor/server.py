"""The editor's web server: 127.0.0.1 only, every request under a random token, nothing secret sent.

The page is served from the package's static files; its API answers JSON. The token in the path is
the only credential: another local user's process, or a web page the browser visits (DNS rebinding,
a cross-site form post), cannot guess it, so it can neither read the parent nor submit a job. The
stack's credentials and the APIFRAME key stay in this process; the page sees the picture, its size
and the job's public state only.
"""

from __future__ import annotations

import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from vary_region_cli.editor.session import EditorSession

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 64 * 1024 * 1024
STATIC_FILES = {"index.html": "text/html", "editor.js": "text/javascript", "editor.css": "text/css"}
# No CDN, no inline script: the page may load only what this server serves (and draw its own blobs).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class EditorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: EditorSession, port: int = 0) -> None:
        self.session = session
        self.token = secrets.token_urlsafe(24)
        self.done = threading.Event()
        super().__init__((LOOPBACK, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/{self.token}/"

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="editor-server", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: EditorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines carry the token, which must not land in a terminal's scrollback."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        route = self._route()
        if route is None:
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain")
            return
        if method == "GET" and (route or "index.html") in STATIC_FILES:
            name = route or "index.html"
            payload = resources.files("vary_region_cli.editor").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, payload, STATIC_FILES[name] + "; charset=utf-8")
            return
        body = self._body() if method == "POST" else b""
        if body is None:
            return
        try:
            status, payload, content_type = self.server.session.handle(method, route, body)
        except Exception as exc:  # one readable answer, never a traceback to the page
            status, payload, content_type = _json(500, {"error": {"code": "EDITOR_ERROR", "message": str(exc)}})
        if route == "api/done" and status == 200:  # before the answer: whoever reads it finds the editor done
            self.server.done.set()
        self._send(HTTPStatus(status), payload, content_type)

    def _route(self) -> str | None:
        """The path after /<token>/, or None when the token is wrong or missing."""
        path = self.path.split("?", 1)[0]
        token, _, rest = path.lstrip("/").partition("/")
        if not secrets.compare_digest(token.encode(), self.server.token.encode()):
            return None
        return rest

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            too_large = b'{"error": {"code": "BODY_TOO_LARGE", "message": "the request is too large"}}'
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, too_large, "application/json")
            return None
        return self.rfile.read(length)

    def _send(self, status: HTTPStatus, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _json(status: int, value: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(value, allow_nan=False).encode("utf-8"), "application/json"

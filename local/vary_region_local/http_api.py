"""The local webhook endpoint: HTTP requests become API Gateway HTTP API (payload 2.0) events for
the webhook function, and its answer becomes the HTTP response."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's own payload limit
ROUTE = "POST /webhook/{job_id}"


def http_api_event(
    method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes, source_ip: str
) -> dict[str, Any]:
    """The event API Gateway sends for `POST /webhook/{job_id}` (payload format 2.0)."""
    now = time.time()
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode("ascii"), True
    segments = raw_path.strip("/").split("/")
    path_parameters = {"job_id": segments[1]} if len(segments) == 2 and segments[0] == "webhook" else None
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": ROUTE if path_parameters else "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": ROUTE if path_parameters else "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event


class HttpApiServer:
    """A ThreadingHTTPServer that hands every request to `invoke(event) -> proxy response`."""

    def __init__(self, invoke: Callable[[dict[str, Any]], Any], host: str = "127.0.0.1", port: int = 0) -> None:
        self._invoke = invoke
        handler = self._handler_class()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        invoke = self._invoke

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the handler logs
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._reply(413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}')
                    return
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                if self.command != "POST" or not parts.path.startswith("/webhook/"):
                    self._reply(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
                    return
                event = http_api_event(
                    self.command, parts.path, parts.query, dict(self.headers.items()), body, self.client_address[0]
                )
                try:
                    response = invoke(event)
                except Exception:  # an unhandled handler error is a 500 from API Gateway too
                    self._reply(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
                    return
                self._reply(*proxy_response(response))

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def proxy_response(response: Any) -> tuple[int, dict[str, str], bytes]:
    """Interpret a Lambda proxy result the way API Gateway does."""
    if not isinstance(response, dict) or "statusCode" not in response:
        return 200, {"content-type": "application/json"}, json.dumps(response).encode()
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode("utf-8")
    headers = {k: str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name] = ",".join(str(v) for v in values)
    return int(response["statusCode"]), headers, raw

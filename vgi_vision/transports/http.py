"""HTTP transport: a stateless worker any number of replicas can serve.

The server half is a WSGI app on waitress (a production, pure-Python server). Every scan
response carries at most one batch plus a sealed continuation token, so no request depends on
which replica served the previous one. Bearer-token auth is checked before any work is done.
The client half is one pooled, keep-alive ``httpx.Client``.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import httpx

from vgi_vision.protocol import error_message
from vgi_vision.server import Dispatcher, Reply, SealedStates
from vgi_vision.transports import TransportError

log = logging.getLogger(__name__)

RPC_PATH = "/v1/rpc"
HEALTH_PATH = "/healthz"
CONTENT_TYPE = "application/vnd.apache.arrow.stream"


def make_app(dispatcher: Dispatcher, states: SealedStates, auth_token: str | None = None
             ) -> Callable:
    """The WSGI application: POST Arrow IPC requests to ``/v1/rpc``; GET ``/healthz``."""
    expected = f"Bearer {auth_token}".encode() if auth_token else None

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == HEALTH_PATH and method == "GET":
            return _respond(start_response, 200, b"ok", "text/plain")
        if path != RPC_PATH:
            return _send(start_response, Reply(error_message("bad_request",
                                                              f"no such path {path}"), "bad_request"), 404)
        if method != "POST":
            return _send(start_response, Reply(error_message("bad_request", "use POST"),
                                                "bad_request"), 405)
        if expected is not None:
            given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                return _send(start_response, Reply(error_message(
                    "unauthorized", "missing or wrong bearer token"), "unauthorized"))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return _send(start_response, Reply(error_message(
                "bad_request", "a Content-Length is required"), "bad_request"))
        limit = dispatcher.limits.max_request_bytes
        if length > limit:
            return _send(start_response, Reply(error_message(
                "limit_exceeded", f"request of {length} bytes exceeds the limit of {limit}"),
                "limit_exceeded"))
        body = environ["wsgi.input"].read(length)
        return _send(start_response, dispatcher.reply(body, states))

    return app


def _send(start_response: Callable, reply: Reply, status: int | None = None
           ) -> Iterable[bytes]:
    return _respond(start_response, status or reply.http_status, reply.data, CONTENT_TYPE)


def _respond(start_response: Callable, status: int, body: bytes, content_type: str
             ) -> Iterable[bytes]:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
              404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
              500: "Internal Server Error"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", content_type),
                                          ("Content-Length", str(len(body)))])
    return [body]


def serve_http(app: Callable, host: str, port: int, port_file: str | None = None, *,
               threads: int = 8, connection_limit: int = 100, channel_timeout: int = 120,
               max_request_bytes: int = 256 << 20) -> None:
    """Serve until interrupted; ``port_file`` gets the bound port once connections are accepted."""
    from waitress.server import create_server

    server = create_server(app, host=host, port=port, threads=threads,
                           connection_limit=connection_limit, channel_timeout=channel_timeout,
                           max_request_body_size=max_request_bytes, ident="vgi-vision")
    bound = server.effective_port
    log.info("serving HTTP on http://%s:%s", host, bound)
    if port_file:
        target = Path(port_file)
        temp = target.with_name(target.name + f".{os.getpid()}.tmp")
        temp.write_text(f"{bound}\n")
        os.replace(temp, target)  # readers never see a half-written file
    try:
        server.run()
    finally:
        server.close()


class HttpTransport:
    """Client half: keep-alive pooled HTTP/1.1, safe to share between threads."""

    def __init__(self, url: str, auth_token: str | None = None, timeout: float = 600.0) -> None:
        headers = {"Content-Type": CONTENT_TYPE}
        if auth_token:
            headers["Authorization"] = f"Bearer {auth_token}"
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=10.0),
                                    limits=httpx.Limits(max_keepalive_connections=16,
                                                        max_connections=64))

    def roundtrip(self, request: bytes) -> bytes:
        try:
            response = self._client.post(RPC_PATH, content=request)
        except httpx.HTTPError as exc:
            raise TransportError(f"HTTP request to {self.url} failed: {exc}") from None
        if response.headers.get("content-type") != CONTENT_TYPE:
            raise TransportError(f"{self.url} answered HTTP {response.status_code} with "
                                 f"{response.headers.get('content-type')!r}: "
                                 f"{response.text[:200]}")
        return response.content

    def close(self) -> None:
        self._client.close()

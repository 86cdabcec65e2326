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
from collections.abc import Callable, Iterable
from pathlib import Path

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

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == HEALTH_PATH and method == "GET":
            return _respond(start_response, 200, b"ok", "text/plain")
        refusal = refuse(environ, path, method, auth_token, dispatcher.limits.max_request_bytes)
        if refusal is None:
            body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            reply, status = dispatcher.reply(body, states), None
        else:
            reply, status = refusal
        return _respond(start_response, status or reply.http_status, reply.data, CONTENT_TYPE)

    return app


def refuse(environ: dict, path: str, method: str, auth_token: str | None, limit: int
           ) -> tuple[Reply, int | None] | None:
    """Why a request is refused before any work, or None to serve it."""

    def failure(kind: str, message: str, status: int | None = None) -> tuple[Reply, int | None]:
        return Reply(error_message(kind, message), kind), status

    if path != RPC_PATH:
        return failure("bad_request", f"no such path {path}", 404)
    if method != "POST":
        return failure("bad_request", "use POST", 405)
    if auth_token is not None and not bearer_matches(environ.get("HTTP_AUTHORIZATION", ""),
                                                     auth_token):
        return failure("unauthorized", "missing or wrong bearer token")
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length < 0:
        return failure("bad_request", "a Content-Length is required")
    if length > limit:
        return failure("limit_exceeded", f"request of {length} bytes exceeds the limit of {limit}")
    return None


def bearer_matches(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``; the scheme is case-insensitive (RFC 7235)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1", "replace"), token.encode("latin-1", "replace"))


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
                           # waitress refuses a body of exactly its limit; ours is inclusive
                           max_request_body_size=max_request_bytes + 1, ident="vgi-vision")
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
        if response.status_code == 413 and response.headers.get("content-type") != CONTENT_TYPE:
            # refused by the HTTP server itself before the worker saw it
            return error_message("limit_exceeded", f"{self.url} refused the request as too "
                                                   f"large: {response.text[:200]}")
        if response.headers.get("content-type") != CONTENT_TYPE:
            raise TransportError(f"{self.url} answered HTTP {response.status_code} with "
                                 f"{response.headers.get('content-type')!r}: "
                                 f"{response.text[:200]}")
        return response.content

    def close(self) -> None:
        self._client.close()

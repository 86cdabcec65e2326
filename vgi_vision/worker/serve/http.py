"""HTTP server half: an ASGI app on Hypercorn (h11 on asyncio), stateless across replicas.

A connection is a coroutine, not a thread, so hundreds of idle or trickling peers cost a
socket and a few kilobytes each, and the server's keep-alive timer runs from the moment a
connection opens until its request headers are complete: that is the header deadline. ASGI
hands the app the headers before the body, so the bearer token and the Content-Length limit
are checked before a byte of the body is read: a refused request is answered and its
connection closed, its body never buffered or spooled. Calls run on a bounded thread pool, so
the event loop keeps accepting and refusing while the model works.

Every scan response carries at most one batch plus a sealed continuation token, so no request
depends on which replica served the previous one.

A worker on a loopback address without a bearer token answers only to loopback Host names
(:mod:`vgi_vision.loopback`): a web page cannot use it by rebinding its own DNS name to
127.0.0.1. With a token a page has nothing to authenticate with, and a worker bound beyond
loopback is addressed by whatever name its proxy or Service uses, so neither checks the Host.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vgi_vision.loopback import is_loopback_host
from vgi_vision.protocol import ErrorKind, error_message
from vgi_vision.protocol.bearer import bearer_matches, checked_token
from vgi_vision.transports.http import CONTENT_TYPE, HEALTH_PATH, RPC_PATH
from vgi_vision.worker.dispatcher import Dispatcher, Reply, SealedStates

log = logging.getLogger(__name__)

MISDIRECTED = ("this worker answers only to localhost, 127.0.0.1 or [::1] as Host: it listens "
               "on a loopback address without a bearer token (a proxy in front must pass a "
               "loopback Host, or give the worker --auth-token-file)")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RpcApp:
    """The ASGI application: POST Arrow IPC requests to ``/v1/rpc``; GET ``/healthz``.

    Requests that pass the header checks are answered on ``calls``, a bounded pool: a burst
    of requests queues there instead of starting a thread each. At most ``max_requests`` of
    them are received or served at once (the others wait before their body is read), which
    bounds the request bytes held in memory. ``loopback_only`` (the worker is bound to a
    loopback address) refuses other Host names when there is no ``auth_token``.
    """

    def __init__(self, dispatcher: Dispatcher, states: SealedStates,
                 auth_token: str | None = None, calls: Executor | None = None,
                 max_requests: int = 64, loopback_only: bool = False) -> None:
        self.dispatcher = dispatcher
        self.states = states
        self.auth_token = None if auth_token is None else checked_token(auth_token)
        self.loopback_hosts_only = loopback_only and auth_token is None
        self.calls = calls or ThreadPoolExecutor(max_workers=8, thread_name_prefix="vgi-http")
        self.max_requests = max_requests
        self._admitted: asyncio.Semaphore | None = None  # made on the serving loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not spoken here; returning closes the connection
        path, method = scope["path"], scope["method"]
        headers = joined_headers(scope["headers"])
        if self.loopback_hosts_only and not is_loopback_host(headers.get("host", "")):
            await respond(send, 421, error_message(ErrorKind.BAD_REQUEST, MISDIRECTED),
                          CONTENT_TYPE, close=True)
            return
        if path == HEALTH_PATH and method == "GET":
            await respond(send, 200, b"ok", "text/plain")
            return
        refusal = refuse(headers, path, method, self.auth_token,
                         self.dispatcher.limits.max_request_bytes)
        if refusal is not None:
            reply, status = refusal
            # The body stays unread: the connection is closed after this answer.
            await respond(send, status or reply.http_status, reply.data, CONTENT_TYPE,
                          close=True)
            return
        if self._admitted is None:
            self._admitted = asyncio.Semaphore(self.max_requests)
        async with self._admitted:
            body = await read_body(receive)
            if body is None:
                return  # the client went away mid-body: nobody to answer
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(self.calls, self.dispatcher.reply, body,
                                               self.states)
            del body
        await respond(send, reply.http_status, reply.data, CONTENT_TYPE)


def make_app(dispatcher: Dispatcher, states: SealedStates, auth_token: str | None = None,
             threads: int = 8, max_requests: int = 64, loopback_only: bool = False) -> RpcApp:
    return RpcApp(dispatcher, states, auth_token,
                  ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vgi-http"),
                  max_requests, loopback_only)


def joined_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names to values; a repeated header's values joined by ", " as in CGI/WSGI.

    A repeated ``Authorization`` therefore never matches the token.
    """
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def refuse(headers: dict[str, str], path: str, method: str, auth_token: str | None, limit: int
           ) -> tuple[Reply, int | None] | None:
    """Why a request is refused from its headers alone, or None to read and serve it."""

    def failure(kind: ErrorKind, message: str, status: int | None = None
                ) -> tuple[Reply, int | None]:
        return Reply(error_message(kind, message), kind), status

    if path != RPC_PATH:
        return failure(ErrorKind.BAD_REQUEST, f"no such path {path}", 404)
    if method != "POST":
        return failure(ErrorKind.BAD_REQUEST, "use POST", 405)
    if auth_token is not None and not bearer_matches(headers.get("authorization", ""),
                                                     auth_token):
        return failure(ErrorKind.UNAUTHORIZED, "missing or wrong bearer token")
    if "transfer-encoding" in headers:
        return failure(ErrorKind.BAD_REQUEST, "a Content-Length is required, not a transfer coding")
    try:
        length = int(headers.get("content-length") or -1)
    except ValueError:
        length = -1
    if length < 0:
        return failure(ErrorKind.BAD_REQUEST, "a Content-Length is required")
    if length > limit:
        return failure(ErrorKind.LIMIT_EXCEEDED,
                       f"request of {length} bytes exceeds the limit of {limit}")
    return None


async def read_body(receive: Receive) -> bytes | None:
    """The whole body as it arrives (h11 enforces the Content-Length); None on disconnect."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def respond(send: Send, status: int, body: bytes, content_type: str, *,
                  close: bool = False) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop per server: acknowledge both, so the server logs no error."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serve_http(app: RpcApp, host: str, port: int, port_file: str | None = None, *,
               header_timeout: float = 10.0, idle_timeout: float = 300.0) -> None:
    """Serve until SIGINT or SIGTERM; ``port_file`` gets the bound port once it listens.

    ``header_timeout`` bounds the time from a connection's opening (or the end of its previous
    response) to its complete request headers; ``idle_timeout`` bounds a stall while a body
    is read.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    listener = socket.create_server((host, port), backlog=socket.SOMAXCONN)
    bound = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # the server owns and closes the socket
    config.keep_alive_timeout = header_timeout
    config.read_timeout = max(1, round(idle_timeout))
    config.backlog = socket.SOMAXCONN
    config.server_names = []
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = log
    log.info("serving HTTP on http://%s:%s", host, bound)
    if port_file:
        target = Path(port_file)
        temp = target.with_name(target.name + f".{os.getpid()}.tmp")
        temp.write_text(f"{bound}\n")
        os.replace(temp, target)  # readers never see a half-written file
    try:
        asyncio.run(_serve_until_signalled(serve, app, config))
    finally:
        if isinstance(app.calls, ThreadPoolExecutor):
            app.calls.shutdown(wait=True)


async def _serve_until_signalled(serve: Callable[..., Awaitable[None]], app: RpcApp,
                                 config: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)

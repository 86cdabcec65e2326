"""Starting a worker: refuse what would be unsafe or cannot work, build the worker, serve it
on stdio, a unix socket or HTTP until a signal, then drain its write-back.

``vgi-vision serve`` parses its flags into :class:`ServeSettings` and calls :func:`serve`;
nothing here knows about argparse. Everything that can be checked before the model loads is
checked first, so a bad setting costs no wait. Module-level imports are light (the gallery's
``browse`` command uses :func:`required_auth_token` without loading the worker); the worker
itself is imported inside :func:`serve`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from vgi_vision.errors import ModelError, VgiVisionError
from vgi_vision.loopback import is_loopback
from vgi_vision.protocol.bearer import AUTH_TOKEN_ENV, checked_token
from vgi_vision.worker.serve.allocator import tune_for_large_buffers

log = logging.getLogger(__name__)

#: Shortest bearer token accepted on a non-loopback address: guessable tokens are no auth.
MIN_AUTH_TOKEN_CHARS = 16


class StartError(VgiVisionError):
    """The worker will not start; the message says why in one line."""


@dataclass(frozen=True)
class ServeSettings:
    """How to serve: the transport and its address, the model, write-back and every limit.

    ``unix`` set: a unix socket; ``http``: HTTP on ``host``:``port``; neither: stdio.
    ``auth_token`` and ``token_key`` are the secrets' text, read from a file or the
    environment by the caller; both apply to HTTP only. Every field is set: the defaults
    are the command's (``vgi-vision serve --help``), written once there.
    """

    unix: str | None
    http: bool
    host: str
    port: int
    port_file: str | None
    data_root: str | list[str] | None
    model: str | None
    device: str | None
    detector: str | None
    lance: str | None
    lance_max_in_flight: int
    lance_recovery_grace: float
    auth_token: str | None
    token_key: str | None
    token_ttl: int
    insecure_no_auth: bool
    threads: int
    max_connections: int
    max_request_mb: int
    max_rows_per_call: int
    max_image_mb: float
    max_pixels: int
    cpus: set[int] | None
    max_decode_mb: float
    decode_pool_mb: float
    idle_timeout: float
    header_timeout: float
    frame_timeout: float

    @property
    def transport(self) -> str:
        return "unix" if self.unix else "http" if self.http else "stdio"

    @property
    def address(self) -> str:
        return f"unix://{self.unix}" if self.unix else f"http://{self.host}:{self.port}"


def serve(settings: ServeSettings) -> None:
    """Serve until stdin closes (stdio), SIGTERM or Ctrl-C; nothing acknowledged is lost."""
    from vgi_vision.worker.build import WorkerConfig, build_worker
    from vgi_vision.worker.dispatcher import SealedStates, ServerLimits
    from vgi_vision.worker.tokens import TokenSealer
    from vgi_vision.worker.vision.budget import DecodeLimits
    from vgi_vision.worker.vision.detector_files import OBJECT_DETECTOR
    from vgi_vision.worker.vision.model import DEFAULT_MODEL

    transport = settings.transport
    auth_token = (required_auth_token(settings.auth_token, settings.host,
                                      settings.insecure_no_auth) if settings.http else None)
    sealer = (TokenSealer(checked_token_key(settings.token_key), settings.token_ttl)
              if settings.http else None)
    check_address_free(settings)
    tune_for_large_buffers()  # a process of its own: buffers of megabytes come and go
    if settings.cpus:
        try:
            # Before the model loads: its thread count follows the cores it may use.
            os.sched_setaffinity(0, settings.cpus)
        except OSError as exc:
            raise StartError(f"cannot run on cores {sorted(settings.cpus)}: "
                             f"{exc.strerror}") from None
    frames = None
    if transport == "stdio":
        from vgi_vision.worker.serve.stdio import claim_stdout

        frames = claim_stdout()
    limits = ServerLimits(max_request_bytes=settings.max_request_mb << 20,
                          max_rows_per_call=settings.max_rows_per_call)
    config = WorkerConfig(transport=transport, data_root=settings.data_root, limits=limits,
                          model=settings.model or DEFAULT_MODEL,
                          device=settings.device or "cpu", lance=settings.lance,
                          detector=settings.detector or OBJECT_DETECTOR,
                          decode_limits=DecodeLimits(
                              max_pixels=settings.max_pixels,
                              max_bytes=int(settings.max_image_mb * (1 << 20)),
                              max_decode_bytes=int(settings.max_decode_mb * (1 << 20)),
                              pool_bytes=int(settings.decode_pool_mb * (1 << 20))),
                          max_in_flight=settings.lance_max_in_flight,
                          lance_recovery_grace=settings.lance_recovery_grace,
                          token_ttl=settings.token_ttl)
    try:
        worker = build_worker(config)
    except ModelError as exc:
        raise StartError(str(exc)) from None
    except OSError as exc:  # the write-back store is the one thing opened here
        raise StartError(f"cannot open the write-back store {settings.lance}: {exc}") from None
    dispatcher = worker.dispatcher
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if transport == "stdio":
            from vgi_vision.worker.serve.stdio import serve_stdio

            assert frames is not None
            # Served off the main thread, so SIGTERM (raised in the main thread) never lands
            # inside a request: worker.close() below lets the request in flight finish.
            serving = threading.Thread(target=serve_stdio, args=(dispatcher, frames),
                                       name="vgi-stdio", daemon=True)
            serving.start()
            serving.join()
        elif transport == "unix":
            from vgi_vision.worker.serve.unix import UnixServer

            assert settings.unix is not None
            with UnixServer(settings.unix, dispatcher, max_connections=settings.max_connections,
                            idle_timeout=settings.idle_timeout,
                            frame_timeout=settings.frame_timeout) as server:
                log.info("serving on unix://%s", settings.unix)
                server.serve_forever()
        else:
            from vgi_vision.worker.serve.http import make_app, serve_http

            assert sealer is not None
            app = make_app(dispatcher, SealedStates(sealer), auth_token, threads=settings.threads,
                           max_requests=settings.max_connections,
                           loopback_only=is_loopback(settings.host))
            serve_http(app, settings.host, settings.port, settings.port_file,
                       header_timeout=settings.header_timeout,
                       idle_timeout=settings.idle_timeout)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the socket path or port is taken, or not ours to bind
        raise StartError(f"cannot serve on {settings.address}: {exc.strerror or exc}") from None
    finally:
        worker.close()  # drain write-back: nothing acknowledged is lost


def required_auth_token(auth_token: str | None, host: str, insecure_no_auth: bool) -> str | None:
    """The HTTP bearer token, refusing to start where it would not protect the server: a
    non-loopback ``host`` needs a token of at least :data:`MIN_AUTH_TOKEN_CHARS` characters
    unless ``insecure_no_auth``. The gallery's server follows the same rule."""
    if auth_token is not None:
        try:
            checked_token(auth_token)
        except ValueError as exc:
            raise StartError(f"refusing to start: {exc}") from None
    if is_loopback(host) or insecure_no_auth:
        return auth_token
    if not auth_token:
        raise StartError(f"refusing to serve HTTP on {host} without a bearer token: set "
                         f"${AUTH_TOKEN_ENV} or --auth-token-file (or pass --insecure-no-auth)")
    if len(auth_token) < MIN_AUTH_TOKEN_CHARS:
        raise StartError(f"refusing to serve HTTP on {host}: the bearer token has "
                         f"{len(auth_token)} characters, fewer than {MIN_AUTH_TOKEN_CHARS}")
    return auth_token


def checked_token_key(text: str | None) -> bytes | None:
    """The key replicas share for continuation tokens (None: a random one per process)."""
    from vgi_vision.worker.tokens import MIN_KEY_BYTES, key_from_env

    key = key_from_env(text)
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise StartError(f"the continuation token key has {len(key)} bytes, fewer than "
                         f"{MIN_KEY_BYTES}")
    return key


def check_address_free(settings: ServeSettings) -> None:
    """Fail before loading the model when the socket path or port is already taken.

    Binding again later can still fail (the race is real but rare); this makes the common
    case, a second worker started on the same address, fail at once and say why.
    """
    if settings.unix:
        from vgi_vision.worker.serve.unix import socket_is_live

        if socket_is_live(Path(settings.unix)):
            raise StartError(f"cannot serve on unix://{settings.unix}: another worker is "
                             f"serving there")
    elif settings.http and settings.port:
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, settings.port))
            except OSError as exc:
                raise StartError(f"cannot serve on {settings.address}: "
                                 f"{exc.strerror or exc}") from None


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the worker the way Ctrl-C does, so the same shutdown path runs."""
    raise KeyboardInterrupt

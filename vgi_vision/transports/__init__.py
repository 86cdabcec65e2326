"""Transports move framed request/response bytes; none of them knows what a function is.

These are the client halves, which :class:`~vgi_vision.client.client.Client` sends requests
through (``stdio``: a private subprocess worker; ``unix``; ``http``; ``inprocess``: a
dispatcher in this process), plus the frame codec both sides of the stream transports use. The
server halves, the loops that feed requests to the worker's dispatcher, live in
:mod:`vgi_vision.worker.serve`, so the DuckDB process never imports worker code.
"""

from __future__ import annotations

from typing import Protocol

from vgi_vision.errors import TransportError


class Transport(Protocol):
    """The client half: one request's bytes in, the response's bytes out. Thread-safe."""

    def roundtrip(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


def cannot_connect(address: str, reason: object) -> TransportError:
    """No connection to the worker: nothing was sent (it is not running, or has stopped)."""
    return TransportError(f"cannot connect to the worker at {address}: {reason}")


def stopped_during_call(address: str, reason: object) -> TransportError:
    """The connection failed once the request had gone out: the worker may have started on it
    (write-back included), so it is reported, never sent again."""
    return TransportError(f"the worker at {address} stopped during the call (it exited or died "
                          f"before answering; the request is not sent again): {reason}")

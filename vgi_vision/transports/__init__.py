"""Transports move framed request/response bytes; none of them knows what a function is.

These are the client halves, which :class:`~vgi_vision.client.client.Client` sends requests
through (``stdio``: a private subprocess worker; ``unix``; ``http``; ``inprocess``: a
dispatcher in this process), plus the frame codec both sides of the stream transports use. The
server halves, the loops that feed requests to the worker's dispatcher, live in
:mod:`vgi_vision.worker.serve`, so the DuckDB process never imports worker code.
"""

from __future__ import annotations

from typing import Protocol


class TransportError(ConnectionError):
    """The worker could not be reached, or went away during a call."""


class Transport(Protocol):
    """The client half: one request's bytes in, the response's bytes out. Thread-safe."""

    def roundtrip(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...

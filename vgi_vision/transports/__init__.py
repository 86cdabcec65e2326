"""Transports move framed request/response bytes; none of them knows what a function is.

Each module holds both halves of one transport: the server loop that feeds requests to the
shared :class:`~vgi_vision.worker.dispatcher.Dispatcher`, and the client transport that
:class:`~vgi_vision.client.client.Client` sends requests through.
"""

from __future__ import annotations

from typing import Protocol


class TransportError(ConnectionError):
    """The worker could not be reached, or went away during a call."""


class Transport(Protocol):
    """The client half: one request's bytes in, the response's bytes out. Thread-safe."""

    def roundtrip(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...

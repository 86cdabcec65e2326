"""The request loop of the stream transports (stdio pipes and unix sockets), worker side."""

from __future__ import annotations

from typing import Protocol

from vgi_vision.protocol import ErrorKind, error_message
from vgi_vision.transports.framing import (
    ByteReader,
    ByteWriter,
    FrameTooLarge,
    read_frame,
    write_frame,
)
from vgi_vision.worker.dispatcher import Dispatcher, StateStore


class CallGate(Protocol):
    """What a server that shares itself between connections learns of one (unix sockets)."""

    def awaiting_frame(self) -> None:
        """The connection waits for its next request: it may be closed to make room."""

    def begin_call(self) -> bool:
        """A whole request arrived; False if the connection was closed meanwhile (no work)."""


def serve_stream(reader: ByteReader, writer: ByteWriter, dispatcher: Dispatcher,
                 states: StateStore, gate: CallGate | None = None) -> None:
    """Answer frames from ``reader`` on ``writer`` until the peer closes the stream."""
    while True:
        if gate is not None:
            gate.awaiting_frame()
        try:
            request = read_frame(reader, dispatcher.limits.max_request_bytes)
        except FrameTooLarge as exc:
            write_frame(writer, error_message(ErrorKind.LIMIT_EXCEEDED, str(exc)))
            continue
        if request is None or (gate is not None and not gate.begin_call()):
            return
        dispatcher.reply(request, states, deliver=lambda answer: write_frame(writer, answer))

"""Length-prefixed frames for the stream transports (stdio pipes and unix sockets).

A frame is an 8-byte big-endian length followed by that many bytes. An oversized frame is read
and discarded in bounded chunks, so the stream stays in sync and the worker can answer with an
error instead of dropping the connection.
"""

from __future__ import annotations

import struct
from typing import Protocol

from vgi_vision.errors import VgiVisionError

LENGTH = struct.Struct(">Q")
_CHUNK = 1 << 20


class ByteReader(Protocol):
    """What frames are read from: a pipe, a socket file, stdin."""

    def read(self, size: int, /) -> bytes: ...


class ByteWriter(Protocol):
    """What frames are written to."""

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...


class FrameError(VgiVisionError, ConnectionError):
    """The stream ended inside a frame."""


class FrameTooLarge(VgiVisionError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request of {size} bytes exceeds the limit of {limit}")
        self.size = size


def read_exact(stream: ByteReader, size: int) -> bytes | None:
    """Exactly ``size`` bytes; None on a clean end of stream before the first byte."""
    # Grown as bytes arrive, never allocated at the announced size: a peer that announces a
    # huge frame and sends nothing costs nothing.
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(size - len(buffer), _CHUNK))
        if not chunk:
            if not buffer:
                return None
            raise FrameError("stream ended inside a frame")
        buffer += chunk
    return bytes(buffer)


def read_frame(stream: ByteReader, max_bytes: int) -> bytes | None:
    """The next frame's payload, None at end of stream; FrameTooLarge after skipping it."""
    head = read_exact(stream, LENGTH.size)
    if head is None:
        return None
    (size,) = LENGTH.unpack(head)
    if size > max_bytes:
        remaining = size
        while remaining:
            chunk = read_exact(stream, min(remaining, _CHUNK))
            if chunk is None:
                raise FrameError("stream ended inside a frame")
            remaining -= len(chunk)
        raise FrameTooLarge(size, max_bytes)
    payload = read_exact(stream, size) if size else b""
    if payload is None:
        raise FrameError("stream ended inside a frame")
    return payload


def write_frame(stream: ByteWriter, payload: bytes) -> None:
    stream.write(LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()

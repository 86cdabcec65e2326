"""Stdio server half: a private worker answering frames on its stdin/stdout.

stdout carries only frames: the worker moves file descriptor 1 to stderr before loading
anything and keeps a private copy for frames, so a stray print anywhere cannot corrupt the
stream. Once it can serve it writes one empty frame, the handshake its client waits for.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from vgi_vision.transports.framing import ByteWriter, write_frame
from vgi_vision.transports.stdio import READY_FRAME
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates
from vgi_vision.worker.serve.streams import serve_stream


def claim_stdout() -> BinaryIO:
    """Keep a private copy of file descriptor 1 for frames and point fd 1 at stderr.

    Called before the worker loads anything: afterwards whatever writes to stdout, Python or
    native code alike, lands in stderr and cannot corrupt the stream.
    """
    sys.stdout.flush()
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return frames


def serve_stdio(dispatcher: Dispatcher, frames: ByteWriter) -> None:
    """Announce readiness, then answer frames from stdin until it closes."""
    write_frame(frames, READY_FRAME)
    # Unbuffered: the worker serves from a thread that may still be blocked reading when a
    # SIGTERM ends the process, and a buffered stdin's lock aborts interpreter shutdown then.
    requests = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    serve_stream(requests, frames, dispatcher, LiveStates())

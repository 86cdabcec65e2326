"""Subprocess transport: the client spawns a worker and speaks frames over its stdin/stdout.

The worker is private to one client, so scan state stays live in its memory. stdout carries
only frames: the server half moves file descriptor 1 to stderr before loading anything and
keeps a private copy for frames, so a stray print anywhere cannot corrupt the stream.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import BinaryIO

from vgi_vision.server import Dispatcher, LiveStates
from vgi_vision.transports import TransportError
from vgi_vision.transports.framing import FrameError, read_frame, serve_stream, write_frame

log = logging.getLogger(__name__)

#: Responses are trusted (we spawned the worker) but still bounded.
MAX_RESPONSE_BYTES = 1 << 31


def claim_stdout() -> BinaryIO:
    """Keep a private copy of file descriptor 1 for frames and point fd 1 at stderr.

    Called before the worker loads anything: afterwards whatever writes to stdout, Python or
    native code alike, lands in stderr and cannot corrupt the stream.
    """
    sys.stdout.flush()
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return frames


def serve_stdio(dispatcher: Dispatcher, frames: BinaryIO) -> None:
    serve_stream(sys.stdin.buffer, frames, dispatcher, LiveStates())


def worker_command(*extra: str) -> list[str]:
    """Command line of a private worker; quiet unless ``extra`` asks for more logging."""
    return [sys.executable, "-m", "vgi_vision", "serve", "--log-level", "warning", *extra]


class SubprocessTransport:
    """Owns one worker process; respawns it on the call after it died.

    A call in flight when the worker dies fails with a clear error (its partial work is gone);
    the next call starts a fresh worker, so one crash costs one query, not the session.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.env = env
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _ensure_process(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            # A session of its own: Ctrl-C at the caller's prompt is not the worker's to take.
            # It still ends with its caller: end of input (or SIGTERM) stops it.
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env={**os.environ, **(self.env or {})}, close_fds=True,
                start_new_session=True)
        return self._process

    def roundtrip(self, request: bytes) -> bytes:
        with self._lock:
            process = self._ensure_process()
            try:
                write_frame(process.stdin, request)
                response = read_frame(process.stdout, MAX_RESPONSE_BYTES)
            except (BrokenPipeError, FrameError, OSError, ValueError) as exc:
                response = None
                log.debug("worker pipe failed: %s", exc)
            if response is None:
                if process.poll() is None:
                    process.kill()  # a worker that broke the stream is not trusted further
                code = process.wait()
                self._process = None
                raise TransportError(f"the vgi-vision worker (pid {process.pid}) exited with "
                                     f"code {code} during the call; the next call starts a "
                                     f"new worker")
            return response

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # EOF: the worker's serve loop ends cleanly
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            if process.stdout:
                process.stdout.close()

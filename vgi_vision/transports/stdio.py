"""Subprocess transport: the client spawns a worker and speaks frames over its stdin/stdout.

The worker is private to one client, so scan state stays live in its memory. stdout carries
only frames: the server half (:mod:`vgi_vision.worker.serve.stdio`) moves file descriptor 1
to stderr before loading anything and keeps a private copy for frames, so a stray print
anywhere cannot corrupt the stream.

Start-up is a handshake: once the worker has loaded its model and can serve, it writes one
empty frame. A worker that dies before that (a missing model, a bad flag, an unwritable
``--lance`` URI) has said why on stderr, which the client keeps, so the caller sees the
worker's own message instead of an exit code.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

from vgi_vision.errors import TransportError
from vgi_vision.protocol.limits import MAX_RESPONSE_BYTES
from vgi_vision.transports.framing import FrameError, read_frame, write_frame

log = logging.getLogger(__name__)

#: The frame a worker writes once it serves: empty, which no response ever is.
READY_FRAME = b""
#: How long a worker that closed its stdout gets to exit by itself before it is killed.
EXIT_GRACE_SECONDS = 5.0
#: Lines of a worker's stderr kept to explain how it ended.
STDERR_TAIL_LINES = 20
#: Bytes a pipe to or from the worker holds before its writer waits. Linux's default, 64 KiB,
#: turns a 43 MB request (24 phone photos) into ~700 hand-offs between the two processes:
#: ~90 ms per frame, against ~60 ms at 1 MiB, the most an unprivileged process gets by default.
PIPE_BYTES = 1 << 20


class WorkerStartError(TransportError):
    """A private worker exited before it could serve; the message is the worker's own."""


def worker_command(*extra: str) -> list[str]:
    """Command line of a private worker; quiet unless ``extra`` asks for more logging."""
    return [sys.executable, "-m", "vgi_vision", "serve", "--log-level", "warning", *extra]


def widen(pipe: IO[bytes] | None) -> None:
    """Give ``pipe`` a buffer of ``PIPE_BYTES``; where the system refuses (a lower
    ``/proc/sys/fs/pipe-max-size``, or not Linux) it stays as it was: slower, not wrong."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is None or set_size is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), set_size, PIPE_BYTES)
    except OSError as exc:
        log.debug("pipe buffer left at the system default: %s", exc)


class StderrTail:
    """A worker's stderr: held back while it starts, relayed to ours once it serves.

    The last lines are kept either way, so a worker that dies can be explained by what it
    said last. Holding start-up output back keeps a failed start to one message, the one the
    caller raises.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._relay = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True,
                                        name="vgi-worker-stderr")
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                with self._lock:
                    self.lines.append(line)
                    if self._relay:
                        print(line, file=sys.stderr, flush=True)

    def serving(self) -> None:
        """The worker started: relay what it said so far and everything it says from now."""
        with self._lock:
            self._relay = True
            for line in self.lines:
                print(line, file=sys.stderr, flush=True)

    def last_words(self, timeout: float = 2.0) -> str:
        """The worker's last non-empty line, once its stderr is closed (or ``timeout``)."""
        self._thread.join(timeout)
        with self._lock:
            said = [line.strip() for line in self.lines if line.strip()]
        return said[-1].removeprefix("vgi-vision: ") if said else ""


class SubprocessTransport:
    """Owns one worker process; starts it at once and again on the call after it died.

    A call in flight when the worker dies fails with a clear error (its partial work is gone);
    the next call starts a fresh worker, so one crash costs one query, not the session.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.env = env
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None
        with self._lock:
            self._ensure_process()  # a worker that cannot start fails the constructor

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _ensure_process(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        # A session of its own: Ctrl-C at the caller's prompt is not the worker's to take.
        # It still ends with its caller: end of input (or SIGTERM) stops it.
        process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, **(self.env or {})}, close_fds=True,
            start_new_session=True)
        assert process.stdout is not None and process.stderr is not None
        for pipe in (process.stdin, process.stdout):
            widen(pipe)
        stderr = StderrTail(process.stderr)
        try:
            ready = read_frame(process.stdout, MAX_RESPONSE_BYTES)
        except (FrameError, OSError):
            ready = None
        if ready != READY_FRAME:
            code = self._reap(process)
            reason = stderr.last_words() or f"it exited with code {code}"
            raise WorkerStartError(f"the vgi-vision worker could not start: {reason}")
        stderr.serving()
        self._process, self._stderr = process, stderr
        return process

    @staticmethod
    def _reap(process: subprocess.Popen[bytes]) -> int:
        """Wait for a worker that broke the stream to exit (killing it if it does not)."""
        try:
            return process.wait(timeout=EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()  # a worker that broke the stream is not trusted further
            return process.wait()

    def roundtrip(self, request: bytes) -> bytes:
        with self._lock:
            process = self._ensure_process()
            assert process.stdin is not None and process.stdout is not None
            try:
                write_frame(process.stdin, request)
                response = read_frame(process.stdout, MAX_RESPONSE_BYTES)
            except (BrokenPipeError, FrameError, OSError, ValueError) as exc:
                response = None
                log.debug("worker pipe failed: %s", exc)
            if response is None:
                code = self._reap(process)
                said = self._stderr.last_words() if self._stderr is not None else ""
                self._process = self._stderr = None
                raise TransportError(f"the vgi-vision worker (pid {process.pid}) exited "
                                     f"({exit_reason(code)}) during the call"
                                     + (f": {said}" if said else "")
                                     + "; the next call starts a new worker")
            return response

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin:
                process.stdin.close()  # EOF: the worker's serve loop ends cleanly
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            if process.stdout:
                process.stdout.close()


def exit_reason(code: int) -> str:
    """``code 1`` or ``killed by SIGKILL``: what a person needs to know about an exit."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"code {code}"

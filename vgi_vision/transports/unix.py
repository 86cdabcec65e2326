"""Unix-socket transport: one worker serving many local clients, each connection a thread.

The socket file is created with mode 0600 (only the owner may connect), the number of
concurrent connections is capped, and an idle connection is closed after a timeout so a client
that vanished cannot pin a thread forever. Scan state lives in the worker, in one store shared
by all connections.
"""

from __future__ import annotations

import os
import queue
import socket
import socketserver
import threading
from pathlib import Path

from vgi_vision.protocol import error_message
from vgi_vision.server import Dispatcher, LiveStates
from vgi_vision.transports import TransportError
from vgi_vision.transports.framing import LENGTH, FrameError, read_frame, serve_stream, write_frame

MAX_RESPONSE_BYTES = 1 << 31


class _Handler(socketserver.StreamRequestHandler):
    server: UnixServer

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout)
        super().setup()

    def handle(self) -> None:
        try:
            if not self.server.slots.acquire(blocking=False):
                write_frame(self.wfile, error_message(
                    "limit_exceeded", f"the worker already serves "
                                      f"{self.server.max_connections} connections; try again "
                                      f"later"))
                return
            try:
                serve_stream(self.rfile, self.wfile, self.server.dispatcher, self.server.states)
            finally:
                self.server.slots.release()
        except (OSError, FrameError):
            pass  # the client went away or idled out (refused or not): nothing to answer


def socket_is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    #: Listen backlog. socketserver's default of 5 turns a burst of clients connecting at once
    #: away: a unix-socket connect does not wait for room in a full backlog, it fails (EAGAIN).
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str | os.PathLike, dispatcher: Dispatcher, *,
                 max_connections: int = 64, idle_timeout: float = 300.0) -> None:
        self.dispatcher = dispatcher
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.slots = threading.BoundedSemaphore(max_connections)
        # One store for all connections: a client's pool may send a scan's continuation over
        # another connection than the one that started it. Handles are random and bound to
        # their call, and only the socket's owner can connect.
        self.states = LiveStates(max_scans=4096)
        path = Path(path)
        if path.is_socket():
            if socket_is_live(path):
                raise OSError(f"another worker is serving on {path}")
            path.unlink()  # a stale socket from a previous run
        old_umask = os.umask(0o177)  # created 0600: no window where others may connect
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old_umask)

    def server_close(self) -> None:
        super().server_close()
        Path(str(self.server_address)).unlink(missing_ok=True)  # no stale socket left behind


class StaleConnection(FrameError):
    """The worker closed the connection without sending a byte of the response."""


def still_open(sock: socket.socket) -> bool:
    """Whether a pooled connection can carry a request: the worker has not closed it (an
    idle timeout, a restart) and sent nothing unasked."""
    timeout = sock.gettimeout()
    sock.settimeout(0)  # a socket with a timeout would wait for data before peeking
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True  # nothing to read and not closed: alive
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return False  # closed (end of stream), or bytes nobody asked for


class UnixTransport:
    """Client half: a small pool of connections, so concurrent callers do not queue.

    A request is sent once. A pooled connection the worker has closed is noticed before the
    request goes out; once it has gone out, the worker may have read it and started work
    (write-back included), so a connection lost before the answer is reported as the worker
    stopping during the call, never sent again.
    """

    def __init__(self, path: str, timeout: float = 600.0) -> None:
        self.path = path
        self.timeout = timeout
        self._idle: queue.LifoQueue[socket.socket] = queue.LifoQueue()
        self._closed = False

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot connect to the worker at unix://{self.path}: "
                                 f"{exc}") from None
        return sock

    def _checkout(self) -> socket.socket:
        """An open pooled connection, or a new one."""
        while True:
            try:
                sock = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if still_open(sock):
                return sock
            sock.close()

    def roundtrip(self, request: bytes) -> bytes:
        sock = self._checkout()
        try:
            response = self._exchange(sock, request)
        except (OSError, FrameError) as exc:
            sock.close()
            raise TransportError(f"the worker at unix://{self.path} stopped during the call "
                                 f"(it exited or died before answering; the request is not "
                                 f"sent again): {exc}") from None
        if self._closed:
            sock.close()
        else:
            self._idle.put(sock)
        return response

    @staticmethod
    def _exchange(sock: socket.socket, request: bytes) -> bytes:
        try:
            sock.sendall(LENGTH.pack(len(request)))
            sock.sendall(request)
        except BrokenPipeError:
            pass  # a worker refusing the connection says why in a frame before closing: read it
        with sock.makefile("rb") as stream:
            response = read_frame(stream, MAX_RESPONSE_BYTES)
        if response is None:
            raise StaleConnection("connection closed by the worker before answering")
        return response

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

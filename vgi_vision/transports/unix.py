"""Unix-socket transport: one worker serving many local clients, each connection a thread.

The socket file is created with mode 0600 (only the owner may connect). Connections share a
fixed number of slots: when all are taken, the connection that has waited longest for its
next request is closed to make room (no work has started for it, so its client may simply
send again), and only when every slot is inside a call or was answered within the last
second is a newcomer refused. A request
frame must arrive whole within a deadline from its first byte, and a connection that stalls
for the idle timeout is closed, so neither silent nor trickling clients can keep the worker
from serving. Scan state lives in the worker, in one store shared by all connections.
"""

from __future__ import annotations

import os
import queue
import socket
import socketserver
import threading
import time
from pathlib import Path

from vgi_vision.protocol import error_message
from vgi_vision.server import Dispatcher, LiveStates
from vgi_vision.transports import TransportError
from vgi_vision.transports.framing import LENGTH, FrameError, read_frame, serve_stream, write_frame

MAX_RESPONSE_BYTES = 1 << 31


class Connection:
    """One client connection: the reader its frames come from, with their deadlines.

    Reads wait at most ``idle_timeout``; once a frame's first byte has arrived, the whole
    frame must arrive within ``frame_timeout``, however slowly it trickles.
    """

    def __init__(self, sock: socket.socket, slots: Slots, idle_timeout: float,
                 frame_timeout: float) -> None:
        self.sock = sock
        self.slots = slots
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self._frame_deadline: float | None = None

    def read(self, size: int, /) -> bytes:
        timeout = self.idle_timeout
        if self._frame_deadline is not None:
            timeout = min(timeout, self._frame_deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("the request frame did not arrive in time")
        self.sock.settimeout(timeout)
        data = self.sock.recv(size)
        if data and self._frame_deadline is None:
            self._frame_deadline = time.monotonic() + self.frame_timeout
        return data

    def awaiting_frame(self) -> None:
        self._frame_deadline = None
        self.sock.settimeout(self.idle_timeout)
        self.slots.waiting(self)

    def begin_call(self) -> bool:
        self.sock.settimeout(self.idle_timeout)  # bounds writing the answer
        return self.slots.in_call(self)

    def close_for_room(self) -> None:
        """Wake this connection's thread, blocked in a read, with an end of stream."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


class Slots:
    """At most ``capacity`` connections; a full house makes room by closing the one that
    has waited longest for a request, if it has waited at least ``grace`` seconds.

    Connections inside a call are never closed. The grace keeps a burst of newcomers from
    closing connections that have just been answered and are about to send again (a
    client's pool), which would only make their clients reconnect.
    """

    def __init__(self, capacity: int, grace: float = 1.0) -> None:
        self.capacity = capacity
        self.grace = grace
        self._lock = threading.Lock()
        self._waiting_since: dict[Connection, float | None] = {}  # None: inside a call

    def admit(self, connection: Connection) -> bool:
        with self._lock:
            if len(self._waiting_since) >= self.capacity:
                latest = time.monotonic() - self.grace
                waiting = [(since, id(held), held) for held, since
                           in self._waiting_since.items()
                           if since is not None and since <= latest]
                if not waiting:
                    return False
                _, _, longest = min(waiting)
                del self._waiting_since[longest]
                longest.close_for_room()
            self._waiting_since[connection] = time.monotonic()
            return True

    def waiting(self, connection: Connection) -> None:
        with self._lock:
            if connection in self._waiting_since:
                self._waiting_since[connection] = time.monotonic()

    def in_call(self, connection: Connection) -> bool:
        with self._lock:
            if connection not in self._waiting_since:
                return False  # closed to make room: its request is not served
            self._waiting_since[connection] = None
            return True

    def release(self, connection: Connection) -> None:
        with self._lock:
            self._waiting_since.pop(connection, None)


class _Handler(socketserver.StreamRequestHandler):
    server: UnixServer

    def setup(self) -> None:
        self.request.settimeout(self.server.idle_timeout)
        super().setup()

    def handle(self) -> None:
        server = self.server
        connection = Connection(self.request, server.slots, server.idle_timeout,
                                server.frame_timeout)
        try:
            if not server.slots.admit(connection):
                write_frame(self.wfile, error_message(
                    "limit_exceeded", f"the worker already serves {server.max_connections} "
                                      f"connections, all busy; try again later"))
                return
            try:
                serve_stream(connection, self.wfile, server.dispatcher, server.states,
                             gate=connection)
            finally:
                server.slots.release(connection)
        except (OSError, FrameError):
            pass  # the client went away, idled out or was closed for room: nothing to answer


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
                 max_connections: int = 64, idle_timeout: float = 300.0,
                 frame_timeout: float = 60.0) -> None:
        self.dispatcher = dispatcher
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.slots = Slots(max_connections)
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

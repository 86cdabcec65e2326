"""Unix-socket server half: one worker serving many local clients, each connection a thread.

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
import socket
import socketserver
import threading
import time
from pathlib import Path

from vgi_vision.protocol import ErrorKind, error_message
from vgi_vision.transports.framing import FrameError, write_frame
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates
from vgi_vision.worker.serve.streams import serve_stream


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
                    ErrorKind.LIMIT_EXCEEDED, f"the worker already serves {server.max_connections} "
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

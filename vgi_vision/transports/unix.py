"""Unix-socket client transport: a small pool of connections to one local worker.

The worker side (``vgi_vision.worker.serve.unix``) shares fixed connection slots between
clients and keeps scan state in its memory, one store for all connections.
"""

from __future__ import annotations

import queue
import socket

from vgi_vision.protocol.limits import MAX_RESPONSE_BYTES
from vgi_vision.transports import cannot_connect, stopped_during_call
from vgi_vision.transports.framing import LENGTH, FrameError, read_frame


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
            raise cannot_connect(f"unix://{self.path}", exc) from None
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
            raise stopped_during_call(f"unix://{self.path}", exc) from None
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

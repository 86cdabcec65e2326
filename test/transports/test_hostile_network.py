"""Peers that connect and then stall: they must not shut out a real client, nor cost memory.

Every test runs a real worker process and attacks it over real sockets. "Answered" is
asserted with a generous client timeout: the requirement is that the request gets through
while the attackers are connected, not how fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from conftest import DATA

from vgi_vision.client.client import Client
from vgi_vision.protocol import decode, encode
from vgi_vision.testing.launch import RunningWorker, running_worker

pytestmark = pytest.mark.slow

TOKEN = "s3cret-bearer-token-for-tests"
AUTH = {"VGI_VISION_AUTH_TOKEN": TOKEN}
MB = 1 << 20
DESCRIBE = encode({"op": "describe"})
ANSWERED_WITHIN = 30.0  # seconds; a shut-out client waits for minutes


def http_port(worker: RunningWorker) -> int:
    assert worker.location is not None
    return int(worker.location.rsplit(":", 1)[1])


def kilobytes(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True once the other end closes ``sock`` (data it sent first is skipped)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset: closed too
    return True


def taken_in_by_listener(port: int) -> bool:
    """Whether the process listening on TCP ``port`` has accepted every connection made to it
    and read every byte sent to them so far (the kernel's accept and receive queues, from
    /proc/net/tcp, are empty)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.rsplit(":", 1)[1], 16) != port:
                continue
            unread = int(queues.split(":")[1], 16)  # LISTEN: connections not yet accepted
            if state in ("0A", "01") and unread:  # LISTEN, ESTABLISHED
                return False
    return True


def unread_by_peer(sock: socket.socket) -> int:
    """Bytes written to a unix socket that its peer has not read yet (SIOCOUTQ)."""
    queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", queued)[0])


def wait_until(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {within:.0f} s"
        time.sleep(0.02)


class Attackers:
    """Connections that open and stall: silent, trickling headers, trickling bodies.

    A thread sends one byte per second on every trickling connection until ``close``.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[socket.socket] = []
        self.slow_headers: list[socket.socket] = []
        self.slow_bodies: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self.rounds = 0  # trickling rounds sent so far

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def open(self, idle: int, slow_headers: int, slow_bodies: int) -> None:
        self.idle = [self.connect() for _ in range(idle)]
        self.slow_headers = [self.connect() for _ in range(slow_headers)]
        for number in range(slow_bodies):
            sock = self.connect()
            auth = f"Authorization: Bearer {TOKEN}\r\n" if number % 2 else ""
            sock.sendall(f"POST /v1/rpc HTTP/1.1\r\nHost: w\r\n{auth}"
                         f"Content-Length: {200 * MB}\r\n\r\n".encode())
            self.slow_bodies.append(sock)
        self._thread.start()

    def _trickle(self) -> None:
        header = b"POST /v1/rpc HTTP/1.1\r\nHost: w\r\nX-Padding: " + b"a" * 4096
        sent = 0
        while not self._stop.wait(1.0):
            for sock in self.slow_headers:
                with contextlib.suppress(OSError):
                    sock.send(header[sent % len(header):][:1])
            for sock in self.slow_bodies:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            self.rounds += 1
            sent += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for sock in self.idle + self.slow_headers + self.slow_bodies:
            sock.close()


@contextlib.contextmanager
def attackers(port: int, *, idle: int, slow_headers: int, slow_bodies: int
              ) -> Iterator[Attackers]:
    crowd = Attackers(port)
    try:
        crowd.open(idle, slow_headers, slow_bodies)
        yield crowd
    finally:
        crowd.close()


def test_http_answers_while_hundreds_of_peers_stall(tmp_path: Path) -> None:
    with running_worker("http", env=AUTH, workdir=tmp_path) as worker:
        pid = worker.process.pid if worker.process else 0
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE,
                          headers=headers).status_code == 200
        before = kilobytes(pid, "VmRSS")
        with attackers(http_port(worker), idle=200, slow_headers=200,
                       slow_bodies=20) as crowd:
            wait_until(lambda: crowd.rounds >= 2, "trickling")
            wait_until(lambda: taken_in_by_listener(http_port(worker)),
                       "every attacker accepted and read")
            reply = httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE, headers=headers,
                               timeout=ANSWERED_WITHIN)
            assert reply.status_code == 200
            assert decode(reply.content).header["ok"] is True
            coffee = pa.array([(DATA / "coffee.png").read_bytes()], pa.binary())
            with Client(worker.location, auth_token=TOKEN) as client:
                assert client.call("top_label", coffee).to_pylist() == ["espresso"]
            grown = kilobytes(pid, "VmRSS") - before
        assert grown < 64 * 1024, f"the worker grew by {grown} KB under 420 stalled peers"


def test_http_header_deadline_closes_idle_and_trickling_connections(tmp_path: Path) -> None:
    with running_worker("http", "--header-timeout", "2", env=AUTH, workdir=tmp_path) as worker:
        with attackers(http_port(worker), idle=5, slow_headers=5, slow_bodies=0) as crowd:
            for sock in crowd.idle + crowd.slow_headers:
                assert closed_by_peer(sock, within=ANSWERED_WITHIN)
        with Client(worker.location, auth_token=TOKEN) as client:
            assert client.table("image_classes").num_rows == 1000


def test_http_refuses_an_unauthenticated_body_without_reading_it(tmp_path: Path) -> None:
    """The 401 comes after the headers alone, and the body is neither buffered nor spooled."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    with running_worker("http", env={**AUTH, "TMPDIR": str(spool)},
                        workdir=tmp_path / "worker") as worker:
        pid = worker.process.pid if worker.process else 0
        before, spooled = kilobytes(pid, "VmRSS"), folder_bytes(spool)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", http_port(worker)), timeout=30) as sock:
                sock.sendall(f"POST /v1/rpc HTTP/1.1\r\nHost: w\r\n"
                             f"Content-Length: {199 * MB}\r\n\r\n".encode())
                answer = sock.recv(65536)  # no body byte sent yet
                assert answer.startswith(b"HTTP/1.1 401")
                sent = 0
                with contextlib.suppress(OSError):
                    while sent < 199 * MB:
                        sent += sock.send(b"x" * MB)
                assert sent < 64 * MB, "the worker kept reading a refused body"
        assert folder_bytes(spool) - spooled < MB
        assert kilobytes(pid, "VmRSS") - before < 64 * 1024
        with Client(worker.location, auth_token=TOKEN) as client:
            assert client.table("image_classes").num_rows == 1000


@pytest.mark.parametrize("header", ["Transfer-Encoding: chunked", "Content-Length: nope"])
def test_http_body_without_a_usable_length_is_refused(tmp_path: Path, header: str) -> None:
    with running_worker("http", env=AUTH, workdir=tmp_path) as worker, \
            socket.create_connection(("127.0.0.1", http_port(worker)), timeout=30) as sock:
        sock.sendall(f"POST /v1/rpc HTTP/1.1\r\nHost: w\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"{header}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


# --- unix socket ------------------------------------------------------------------------------

def unix_connect(worker: RunningWorker) -> socket.socket:
    assert worker.location is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ANSWERED_WITHIN)
    sock.connect(worker.location.removeprefix("unix://"))
    return sock


def test_unix_frames_cost_what_arrives_and_must_arrive_in_time(tmp_path: Path) -> None:
    """8 connections announce 255 MB and send 1 MB: the worker holds what arrived, not what
    was announced, and closes each when its frame deadline passes."""
    with running_worker("unix", "--frame-timeout", "3", workdir=tmp_path) as worker:
        pid = worker.process.pid if worker.process else 0
        before = kilobytes(pid, "VmRSS")
        announced = [unix_connect(worker) for _ in range(8)]
        try:
            for sock in announced:
                sock.sendall((255 * MB).to_bytes(8, "big") + b"x" * MB)
            wait_until(lambda: all(unread_by_peer(sock) == 0 for sock in announced),
                       "read by the worker")
            grown = kilobytes(pid, "VmRSS") - before
            assert grown < 8 * 4 * 1024, f"grew by {grown} KB for 8 MB received"
            for sock in announced:
                assert closed_by_peer(sock, within=ANSWERED_WITHIN)
        finally:
            for sock in announced:
                sock.close()
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000


def test_unix_idle_and_trickling_clients_cannot_hold_every_slot(tmp_path: Path) -> None:
    """Every slot held by a silent or a trickling connection: a new client is still served,
    by closing the connection that waited longest for its request."""
    with running_worker("unix", "--max-connections", "4", workdir=tmp_path) as worker:
        idle = [unix_connect(worker) for _ in range(2)]
        trickling = [unix_connect(worker) for _ in range(2)]
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.5):
                for sock in trickling:
                    with contextlib.suppress(OSError):
                        sock.send(b"\x00")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            time.sleep(2)  # past the grace that protects just-answered connections
            for _ in range(3):  # more than once: each newcomer finds the slots full again
                coffee = pa.array([(DATA / "coffee.png").read_bytes()], pa.binary())
                with Client(worker.location) as client:
                    assert client.call("top_label", coffee).to_pylist() == ["espresso"]
            closed = sum(closed_by_peer(sock, within=0.5) for sock in idle + trickling)
            assert closed >= 1
        finally:
            stop.set()
            thread.join()
            for sock in idle + trickling:
                sock.close()

"""Faults a deployed worker meets: a restart between continuations, clients that vanish
mid-request or mid-response, and a burst of new connections.

(A subprocess worker killed mid-query is covered in test_binding.py.)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DATA, EXPECTED_TOP5

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import ErrorKind, argument_rows, decode, encode
from vgi_vision.testing.launch import RunningWorker, running_worker, start_http
from vgi_vision.transports.framing import read_frame, write_frame
from vgi_vision.transports.http import HttpTransport
from vgi_vision.transports.unix import UnixTransport

pytestmark = pytest.mark.slow

KEY = "72657374617274732d6b65792d666f722d7465737473"  # hex, 22 bytes
OTHER_KEY = "616e6f746865722d6b65792d656e746972656c792121"


# --- Restart between continuations ------------------------------------------------------------

@pytest.mark.parametrize("key_after", [pytest.param(KEY, id="same-key"),
                                       pytest.param(OTHER_KEY, id="other-key")])
def test_token_minted_before_a_restart_resumes_after_it(tmp_path: Path, key_after: str) -> None:
    """Stop the worker mid-scan, start a new one on the same port: the scan carries on if the
    new worker shares the token key, and fails with a clear error if it does not."""
    first = start_http(tmp_path / "a.port", env={"VGI_VISION_TOKEN_KEY": KEY},
                       log_file=tmp_path / "a.log")
    port = first.location.rsplit(":", 1)[1]
    client = Client(first.location)
    second: RunningWorker | None = None
    try:
        pid_before = client.request({"op": "describe"})[0]["worker"]["pid"]
        scan = client.scan("image_classes")
        batches = [next(scan)]  # one page served and a token minted, then the worker goes
        first.stop()
        second = start_http(tmp_path / "b.port", port=int(port),
                            env={"VGI_VISION_TOKEN_KEY": key_after},
                            log_file=tmp_path / "b.log")
        assert second.location == first.location
        if key_after != KEY:
            with pytest.raises(WorkerError) as info:
                next(scan)
            assert info.value.kind is ErrorKind.INVALID_TOKEN
            assert "sharing this key" in str(info.value)
            return
        batches.extend(scan)  # the same client and the same token, another process
        assert client.request({"op": "describe"})[0]["worker"]["pid"] != pid_before
        idx = pa.Table.from_batches(batches).column("idx").to_pylist()
        assert len(batches) > 2 and idx == list(range(1000))
    finally:
        client.close()
        first.stop()
        if second is not None:
            second.stop()


# --- Clients that vanish mid-request or mid-response -------------------------------------------

def big_response_request() -> bytes:
    """A classify scan whose first page is ~4000 rows (4 images x top_k 1000)."""
    images = [(DATA / name).read_bytes() for name in EXPECTED_TOP5]
    return encode({"op": "scan", "function": "classify", "token": None},
                  argument_rows([pa.array(images, pa.binary()),
                                 pa.array([1000] * len(images), pa.int32())]))


def http_bytes(port: str, body: bytes, content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    return (f"POST /v1/rpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/vnd.apache.arrow.stream\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + body


def frame_bytes(body: bytes, length: int | None = None) -> bytes:
    return (len(body) if length is None else length).to_bytes(8, "big") + body


def connect(worker: RunningWorker) -> socket.socket:
    if worker.location.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(worker.location.removeprefix("unix://"))
    else:
        sock = socket.create_connection(("127.0.0.1", int(worker.location.rsplit(":", 1)[1])))
    sock.settimeout(60)
    return sock


def abandoned_requests(worker: RunningWorker) -> list[bytes]:
    """What a vanishing client may have sent before closing: a whole request whose answer it
    never reads, half a body, only the head of one."""
    body = big_response_request()
    if worker.location.startswith("unix://"):
        wrap: Callable[..., bytes] = frame_bytes
    else:
        port = worker.location.rsplit(":", 1)[1]
        wrap = lambda b, n=None: http_bytes(port, b, n)  # noqa: E731
    return [wrap(body), wrap(body[: len(body) // 2], len(body)), wrap(b"", len(body))[:12]]


def fresh_client(worker: RunningWorker) -> Client:
    """A client that fails within a minute instead of waiting on a wedged worker."""
    if worker.location.startswith("unix://"):
        return Client(transport=UnixTransport(worker.location.removeprefix("unix://"),
                                              timeout=60))
    return Client(transport=HttpTransport(worker.location, timeout=60))


def serves_correctly(worker: RunningWorker) -> bool:
    coffee = pa.array([(DATA / "coffee.png").read_bytes()], pa.binary())
    with fresh_client(worker) as client:
        head = client.table("classify", coffee).column("label").to_pylist()[0]
        return head == "espresso" and client.table("image_classes").num_rows == 1000


def serves_unless_full(worker: RunningWorker) -> bool:
    """Serves correctly; False (try again) while every connection slot is still taken."""
    try:
        return serves_correctly(worker)
    except WorkerError as exc:
        if exc.kind is not ErrorKind.LIMIT_EXCEEDED:
            raise
        time.sleep(0.01)
        return False


def all_slots_serve(worker: RunningWorker, slots: int) -> bool:
    """Whether ``slots`` connections at once are all served (none leaked by a vanished one)."""
    if worker.location.startswith("http"):
        return serves_correctly(worker)
    sockets = [connect(worker) for _ in range(slots)]
    try:
        replies = []
        for sock in sockets:
            with sock.makefile("rwb") as stream:
                write_frame(stream, encode({"op": "describe"}))
                replies.append(decode(read_frame(stream, 1 << 30)).header)
        return all(reply["ok"] for reply in replies)
    except OSError:
        return False  # refused over the cap and closed while we were still writing
    finally:
        for sock in sockets:
            sock.close()


def abandon(worker: RunningWorker, raw: bytes) -> bool:
    """Send ``raw`` and hang up; False if the worker refused the connection first (unix, at
    its cap: the send of a request larger than the socket buffer then fails)."""
    try:
        with connect(worker) as sock:
            sock.sendall(raw)
        return True
    except OSError:
        return False


# One request thread over HTTP and two connection slots over unix: anything a vanished client
# left stuck would starve the requests that follow.
@pytest.mark.parametrize("transport, flags", [("unix", ["--max-connections", "2"]),
                                              ("http", ["--threads", "1"])])
def test_vanishing_clients_do_not_wedge_the_worker(tmp_path: Path, transport: str,
                                                   flags: list[str]) -> None:
    with running_worker(transport, *flags, workdir=tmp_path) as worker:
        pid = worker.process.pid
        with connect(worker) as stalled:  # asks for a big answer and never reads it
            stalled.sendall(abandoned_requests(worker)[0])
            assert serves_correctly(worker)
        for _ in range(3):
            for raw in abandoned_requests(worker):
                assert any(abandon(worker, raw) for _ in range(500))
        # A unix slot is freed once the worker notices the close (and finishes the work it
        # was doing for it): retry until every slot serves at once.
        assert any(all_slots_serve(worker, 2) for _ in range(500))
        # The slots just used are released as the worker notices those sockets closed.
        assert any(serves_unless_full(worker) for _ in range(500))
        assert worker.process.poll() is None and worker.process.pid == pid
    assert "Traceback" not in (tmp_path / "worker.log").read_text()


def test_a_burst_of_new_connections_is_served(tmp_path: Path) -> None:
    """Many clients connecting at the same moment wait in the listen backlog; none is turned
    away (a unix socket connect does not wait for room in a full backlog: it fails)."""
    with running_worker("unix", workdir=tmp_path) as worker:
        ready = threading.Barrier(32)
        replies: list[dict] = []

        def connect_and_ask() -> None:
            with fresh_client(worker) as client:
                ready.wait(timeout=60)
                replies.append(client.request({"op": "describe"})[0])

        threads = [threading.Thread(target=connect_and_ask) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(replies) == 32 and all(reply["ok"] for reply in replies)

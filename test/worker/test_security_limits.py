"""What makes a worker safe to expose (3/3): request, image, connection, scan and
compressed-body limits, each on a worker of its own.

Every test runs real worker processes and talks to them over real sockets; "no work was done"
is proven from the worker's own log, which has one line per dispatched request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from conftest import kilobytes
from security_probes import DESCRIBE, MB, connect, dispatched, exchange, jpeg, labels, read_reply

from vgi_vision.client.client import Client
from vgi_vision.errors import ProtocolError, WorkerError
from vgi_vision.protocol import (
    HEADER_KEY,
    PROTOCOL_VERSION,
    ErrorKind,
    argument_rows,
    decode,
    encode,
)
from vgi_vision.testing.launch import RunningWorker, running_worker
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates, ServerLimits
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import Registry
from vgi_vision.worker.vision.imaging import decode as decode_image
from vgi_vision.worker.vision.model import load_classifier

pytestmark = pytest.mark.slow

# --- Request limits ---------------------------------------------------------------------------

# The request bound is kept twice: by each transport, which refuses an oversized request before
# buffering it, and by the dispatcher, whichever transport hands it a request. Each alone:

@pytest.mark.parametrize("transport", ["unix", "http"])
def test_an_oversized_request_is_refused_before_it_is_dispatched(tmp_path: Path,
                                                                 transport: str) -> None:
    with running_worker(transport, "--max-request-mb", "1", workdir=tmp_path) as worker, \
            Client(worker.location) as client:
        client.describe()
        before = dispatched(tmp_path)
        with pytest.raises(WorkerError) as info:  # sent as it is (Client.table sends NULL)
            client.request({"op": "scan", "function": "classify", "token": None},
                           argument_rows([pa.array([b"\xff" * (MB + 1024)], pa.binary())]))
        assert info.value.kind is ErrorKind.LIMIT_EXCEEDED
        assert dispatched(tmp_path) == before  # the transport refused it, unread
        assert client.table("image_classes").num_rows == 1000
        assert dispatched(tmp_path) > before  # the count does see dispatched requests


def test_the_dispatcher_bounds_a_request_on_its_own() -> None:
    dispatcher = Dispatcher(Registry(), ServerLimits(max_request_bytes=1024))
    over = dispatcher.reply(b"x" * 1025, LiveStates())
    assert over.error_kind is ErrorKind.LIMIT_EXCEEDED
    assert "1025 bytes exceeds the limit of 1024" in decode(over.data).header["error"]["message"]
    inclusive = dispatcher.reply(b"x" * 1024, LiveStates())
    assert inclusive.error_kind is ErrorKind.BAD_REQUEST


# --- Per-image limits: --max-image-mb and --max-pixels -----------------------------------------

def test_per_image_byte_and_pixel_limits(tmp_path: Path) -> None:
    small = jpeg(300)  # ~10 KB, 90 kilopixels
    padded = small + bytes(150_000)  # decodable (JPEG ignores trailing bytes) but > 0.1 MB
    large = jpeg(1200)  # < 0.1 MB, but 1.44 megapixels
    assert len(large) < 0.1 * MB < len(padded)
    assert decode_image(padded) is not None and decode_image(large) is not None
    (tmp_path / "padded.jpg").write_bytes(padded)
    with running_worker("unix", "--max-image-mb", "0.1", "--max-pixels", "1000000",
                        "--data-root", str(tmp_path), workdir=tmp_path) as worker, \
            Client(worker.location) as client:
        table = client.table("classify", pa.array([small, padded, large, small], pa.binary()),
                             pa.array([1] * 4))
        assert table.column("input_row").to_pylist() == [0, 3]
        assert labels(table) == ["espresso", "espresso"]
        assert client.table("classify", pa.array(["padded.jpg"])).num_rows == 0


# --- Unix socket: connection cap, idle timeout --------------------------------------------------

def serves_a_new_connection(worker: RunningWorker) -> bool:
    try:
        with connect(worker) as sock:
            return exchange(sock, DESCRIBE)["ok"] is True
    except (OSError, ConnectionError):
        return False


def eventually(condition: Callable[[], bool], seconds: float = 120) -> bool:
    """Whether ``condition`` holds within ``seconds``, polled: for what a worker does once it
    notices a close, which a loaded machine delays by more than any fixed number of tries."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_connections_over_the_cap_get_a_clear_error(tmp_path: Path) -> None:
    with running_worker("unix", "--max-connections", "3", workdir=tmp_path) as worker:
        held = [connect(worker) for _ in range(3)]
        try:
            for sock in held:
                assert exchange(sock, DESCRIBE)["ok"]  # each holds a slot now
            with connect(worker) as extra:
                error = read_reply(extra)["error"]
                assert error["kind"] == "limit_exceeded"
                assert "already serves 3 connections" in error["message"]
                assert extra.recv(1) == b""  # and closed
            for sock in held:
                assert exchange(sock, DESCRIBE)["ok"]  # the others keep working
            held.pop().close()
            # The worker frees the slot once it sees the close; a new connection then fits.
            assert eventually(lambda: serves_a_new_connection(worker))
        finally:
            for sock in held:
                sock.close()


def test_idle_and_stalled_connections_are_closed(tmp_path: Path) -> None:
    with running_worker("unix", "--idle-timeout", "1", "--max-connections", "1",
                        workdir=tmp_path) as worker:
        with connect(worker) as idle:
            assert exchange(idle, DESCRIBE)["ok"]
            assert idle.recv(1) == b""  # closed by the worker, not by us
        with connect(worker) as stalled:  # half a frame, then silence
            stalled.sendall((100).to_bytes(8, "big") + b"x" * 10)
            assert stalled.recv(1) == b""
        # Both freed the only slot: the worker serves on.
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000


# --- Scan handles and tokens resume only their own call ------------------------------------------

def scan_page(client: Client, function: str, args: pa.RecordBatch, token: str | None
              ) -> tuple[dict, pa.RecordBatch | None]:
    return client.request({"op": "scan", "function": function, "token": token}, args)


@pytest.mark.parametrize("transport", ["subprocess", "unix", "http"])
def test_a_continuation_is_refused_for_any_other_call(transport: str, worker_pool,
                                                      fixture_bytes: dict[str, bytes]) -> None:
    """A scan's handle (stdio, unix) or token (HTTP) presented with other arguments, for
    another function, or by another client is refused; the scan it belongs to is untouched
    and still resumes for its own call."""
    location = worker_pool.get(transport).location
    one_row, two_rows = argument_rows([], 1), argument_rows([], 2)
    image = argument_rows([pa.array([fixture_bytes["coffee.png"]], pa.binary())])
    with Client(location) as owner, Client(location) as other:
        header, batch = scan_page(owner, "image_classes", one_row, None)
        assert header["done"] is False and batch is not None
        rows = batch.column("idx").to_pylist()
        # ``other`` is another connection to the same unix or HTTP worker; over stdio it is
        # another client with a worker of its own.
        replays = [(owner, "image_classes", two_rows), (owner, "classify", image),
                   (other, "image_classes", two_rows), (other, "classify", image)]
        for client, function, args in replays:
            with pytest.raises(WorkerError) as info:
                scan_page(client, function, args, header["token"])
            assert info.value.kind is ErrorKind.INVALID_TOKEN, (function, args.num_rows)
            if client is owner or transport != "subprocess":
                assert "different call" in str(info.value)
        while not header["done"]:
            header, batch = scan_page(owner, "image_classes", one_row, header["token"])
            rows += batch.column("idx").to_pylist() if batch is not None else []
        assert rows == list(range(1000))


@pytest.mark.parametrize("transport", ["subprocess", "unix"])
def test_a_scan_handle_resumes_once(transport: str, worker_pool) -> None:
    """A worker-held scan moves on when it resumes: its old handle, replayed even for the same
    call, is refused instead of running the same tick (and any write-back of it) twice."""
    args = argument_rows([], 1)
    with Client(worker_pool.get(transport).location) as client:
        first, _ = scan_page(client, "image_classes", args, None)
        second, batch = scan_page(client, "image_classes", args, first["token"])
        assert batch is not None and batch.column("idx").to_pylist()[0] == 64
        with pytest.raises(WorkerError) as info:
            scan_page(client, "image_classes", args, first["token"])
        assert info.value.kind is ErrorKind.INVALID_TOKEN
        _, batch = scan_page(client, "image_classes", args, second["token"])
        assert batch is not None and batch.column("idx").to_pylist()[0] == 128


def test_worker_held_scans_are_bounded() -> None:
    """A client that opens scans and never finishes them cannot grow the worker without
    bound: past ``max_scans`` the oldest are dropped (and refused if they come back)."""
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted()))
    dispatcher, states = Dispatcher(registry), LiveStates(max_scans=3)
    scan = encode({"op": "scan", "function": "image_classes", "token": None},
                  argument_rows([], 1))
    handles = [decode(dispatcher.handle(scan, states)).header["token"] for _ in range(4)]
    replies = [decode(dispatcher.handle(encode(
        {"op": "scan", "function": "image_classes", "token": handle}, argument_rows([], 1)),
        states)).header for handle in handles]
    assert replies[0]["error"]["kind"] == "invalid_token"  # the oldest, dropped
    assert all(reply["ok"] for reply in replies[1:])


def test_a_second_unix_worker_does_not_steal_a_live_socket(tmp_path: Path) -> None:
    with running_worker("unix", workdir=tmp_path) as first:
        second = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--unix",
                                 str(tmp_path / "worker.sock")],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert "another worker is serving" in second.stderr
        assert "Traceback" not in second.stderr
        with Client(first.location) as client:
            assert client.table("image_classes").num_rows == 1000


# --- compressed bodies ----------------------------------------------------------------------

def compressed_bomb() -> bytes:
    """A ~35 KB request whose zstd body holds 1,024 one-megabyte BLOBs of zeros (1 GB)."""
    batch = pa.record_batch({"image": pa.array([bytes(MB)] * 1024, pa.binary())})
    meta = {HEADER_KEY: json.dumps({"v": PROTOCOL_VERSION, "op": "call",
                                    "function": "top_label"}).encode()}
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, batch.schema.with_metadata(meta), options=options) as writer:
        writer.write_batch(batch.replace_schema_metadata(meta))
    return sink.getvalue().to_pybytes()


def test_a_compressed_message_is_refused_before_it_is_decompressed() -> None:
    bomb = compressed_bomb()
    assert len(bomb) < 64 * 1024
    with pytest.raises(ProtocolError, match="compressed Arrow IPC bodies are not accepted"):
        decode(bomb)  # the one decoder of both sides: workers and clients alike


@pytest.mark.parametrize("transport", ["unix", "http"])
def test_a_compression_bomb_costs_the_worker_no_memory(transport: str, tmp_path: Path) -> None:
    bomb = compressed_bomb()
    with running_worker(transport, workdir=tmp_path) as worker:
        assert worker.process is not None and worker.location is not None
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000
        at_rest = kilobytes(worker.process.pid, "VmRSS")
        for _ in range(2):
            if transport == "unix":
                with connect(worker) as sock:
                    header = exchange(sock, bomb)
            else:
                header = decode(httpx.post(f"{worker.location}/v1/rpc", content=bomb,
                                           timeout=60).content).header
            assert header["error"]["kind"] == "bad_request"
            assert "compressed" in header["error"]["message"]
        # Decompressed, each request would have cost the worker a gigabyte.
        assert kilobytes(worker.process.pid, "VmHWM") < at_rest + 128 * 1024
        with Client(worker.location) as client:
            assert client.table("image_classes").num_rows == 1000

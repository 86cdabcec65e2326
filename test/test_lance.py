"""LanceDB write-back: all-or-nothing runs, bounded in-flight work, shutdown and recovery.

Real LanceDB in tmp folders and the real model throughout; failures are injected into the
store's append so the atomicity mechanism itself is what is tested.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from vgi_vision.client import Client, WorkerError
from vgi_vision.functions import VisionContext, build_registry
from vgi_vision.harness import invoke_table_function
from vgi_vision.lance.store import EMBEDDINGS, PREDICTIONS, RUNS, utc_now
from vgi_vision.lance.writeback import WriteBack
from vgi_vision.launch import running_worker
from vgi_vision.model import load_classifier
from vgi_vision.paths import PathPolicy
from vgi_vision.registry import FunctionError, argument_rows


def table_counts(uri: Path) -> dict[str, int]:
    """Rows per table, committed or not, read with a fresh connection."""

    async def count() -> dict[str, int]:
        db = await lancedb.connect_async(str(uri))
        counts = {}
        for name in (PREDICTIONS, EMBEDDINGS, RUNS):
            table = await db.open_table(name)
            counts[name] = await table.count_rows()
            table.close()
        db.close()
        return counts

    return asyncio.run(count())


def uncommitted_counts(uri: Path) -> dict[str, int]:
    """Rows per table that no reader sees yet: written by a run that has not committed."""

    async def count() -> dict[str, int]:
        db = await lancedb.connect_async(str(uri))
        counts = {}
        for name in (PREDICTIONS, EMBEDDINGS):
            table = await db.open_table(name)
            counts[name] = await table.count_rows("NOT committed")
            table.close()
        db.close()
        return counts

    return asyncio.run(count())


def classify_args(images: list[bytes], top_k: int = 5) -> pa.RecordBatch:
    return argument_rows([pa.array(images, pa.binary()),
                          pa.array([top_k] * len(images), pa.int32())])


@pytest.fixture
def images(fixture_bytes: dict[str, bytes]) -> list[bytes]:
    return list(fixture_bytes.values()) * 10  # 40 images: two ticks, many queue batches


def registry_with(sink: WriteBack):
    return build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(), sink))


def test_failure_in_second_sub_batch_leaves_nothing(tmp_path: Path, images: list[bytes]) -> None:
    sink = WriteBack(str(tmp_path / "db"), 1280, max_batch=16)
    registry = registry_with(sink)
    classify = registry.get("classify")
    invoke_table_function(classify, classify_args(images[:4]))  # one good run first
    before = table_counts(tmp_path / "db")

    real_append, calls = sink.store.append, []

    async def failing_append(table: str, rows: list) -> None:
        calls.append(table)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        await real_append(table, rows)

    sink.store.append = failing_append
    with pytest.raises(FunctionError) as info:
        invoke_table_function(classify, classify_args(images))
    assert info.value.kind == "write_failed"
    assert "disk full" in str(info.value) and "rolled back" in str(info.value)
    assert len(calls) > 2  # the run really was written in several sub-batches
    sink.store.append = real_append

    # Zero rows of the failed run anywhere, committed or not; no orphaned commit record.
    assert table_counts(tmp_path / "db") == before
    visible = invoke_table_function(registry.get("predictions"), argument_rows([], 1))
    assert visible.num_rows == 4 * 5
    # The queue keeps running: the next run lands whole.
    invoke_table_function(classify, classify_args(images[:3], top_k=2))
    assert invoke_table_function(registry.get("predictions"),
                                 argument_rows([], 1)).num_rows == 20 + 6
    sink.close()
    assert table_counts(tmp_path / "db") == {PREDICTIONS: 26, EMBEDDINGS: 7, RUNS: 2}


def test_inference_waits_for_a_slow_writer(tmp_path: Path, images: list[bytes]) -> None:
    """With max_in_flight=1, a tick cannot hand over a batch before the previous one landed."""
    sink = WriteBack(str(tmp_path / "db"), 1280, max_in_flight=1, window_seconds=0.01)
    gate = threading.Event()  # the "disk" is stuck until the test opens it
    events: list[str] = []
    real_append, real_write = sink.store.append, sink.write

    async def stuck_append(table: str, rows: list) -> None:
        while not gate.is_set():
            await asyncio.sleep(0.01)
        await real_append(table, rows)

    def traced_write(run_id: str, predictions: list, embeddings: list) -> None:
        events.append("requested")
        real_write(run_id, predictions, embeddings)
        events.append("accepted")

    sink.store.append = stuck_append
    sink.write = traced_write
    registry = registry_with(sink)
    scan = threading.Thread(target=invoke_table_function,
                            args=(registry.get("classify"), classify_args(images * 2)))
    scan.start()  # 80 images: three ticks, three batches
    deadline = time.monotonic() + 120
    while events.count("requested") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # give a broken bound every chance to accept the second batch
    assert events == ["requested", "accepted", "requested"]
    gate.set()
    scan.join(timeout=120)
    assert events == ["requested", "accepted"] * 3
    sink.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_max_in_flight_is_validated(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        WriteBack(str(tmp_path / "db"), 1280, max_in_flight=bad)


def test_predictions_page_over_http(tmp_path: Path, images: list[bytes]) -> None:
    """More stored rows than one page: every row comes back once over continuations."""
    with running_worker("http", "--lance", str(tmp_path / "db"), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            stored = client.table("classify", pa.array(images * 3, pa.binary()),
                                  pa.array([5] * 120, pa.int32()))
            assert stored.num_rows == 600
            before = client.requests
            rows = client.table("predictions")
            assert client.requests - before >= 2  # more than one page
            keys = list(zip(rows.column("run_id").to_pylist(),
                            rows.column("image_key").to_pylist(),
                            rows.column("rank").to_pylist(), rows.column("path").to_pylist(),
                            strict=True))
            assert len(rows) == 600
            # 4 distinct photographs, each stored 30 times over 4 runs (32 images per call)
            assert len({k[1] for k in keys}) == 4 and len({k[0] for k in keys}) == 4
            assert sorted(rows.column("rank").to_pylist()) == sorted([1, 2, 3, 4, 5] * 120)


def test_predictions_without_lance_is_a_clear_error(client) -> None:
    with pytest.raises(WorkerError, match="--lance") as info:
        client.table("predictions")
    assert info.value.kind == "not_configured"


def test_sigterm_drains_and_kill9_recovers(tmp_path: Path, images: list[bytes]) -> None:
    db = tmp_path / "db"
    with running_worker("unix", "--lance", str(db), workdir=tmp_path / "w1") as worker:
        with Client(worker.location) as client:
            acknowledged = client.table("classify", pa.array(images[:8], pa.binary()))
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=60) == 0
        assert not (tmp_path / "w1" / "worker.sock").exists()  # no stale socket left
    assert table_counts(db) == {PREDICTIONS: 40, EMBEDDINGS: 8, RUNS: 1}
    assert acknowledged.num_rows == 40

    # kill -9 between the two pages of one call (32 images a page): the call provably has not
    # finished, and its first page's rows are on disk, uncommitted, when the signal lands.
    unfinished = {PREDICTIONS: 32 * 5, EMBEDDINGS: 32}
    with running_worker("unix", "--lance", str(db), workdir=tmp_path / "w2") as worker:
        with Client(worker.location) as client:
            two_pages = classify_args((images * 2)[:64])
            header, page = client.request({"op": "scan", "function": "classify", "token": None},
                                          two_pages)
            assert header["done"] is False and page is not None and page.num_rows == 32 * 5
            deadline = time.monotonic() + 60
            while uncommitted_counts(db) != unfinished and time.monotonic() < deadline:
                time.sleep(0.05)  # until the page's rows have landed
            assert uncommitted_counts(db) == unfinished
            os.kill(worker.process.pid, signal.SIGKILL)
            assert worker.process.wait(timeout=60) == -signal.SIGKILL
            with pytest.raises(ConnectionError):
                client.request({"op": "scan", "function": "classify",
                                "token": header["token"]}, two_pages)
    assert uncommitted_counts(db) == unfinished  # left behind by the killed call
    # A restart opens cleanly and removes them; the acknowledged run is untouched.
    with running_worker("unix", "--lance", str(db), workdir=tmp_path / "w3") as worker:
        with Client(worker.location) as client:
            visible = client.table("predictions")
    assert uncommitted_counts(db) == {PREDICTIONS: 0, EMBEDDINGS: 0}
    assert table_counts(db) == {PREDICTIONS: 40, EMBEDDINGS: 8, RUNS: 1}
    assert visible.num_rows == 40


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 4 MB filesystem (tmpfs), so 'disk full' comes from the kernel, not a mock."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"this test mounts a tmpfs and needs root: {mounted.stderr}"
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_full_disk_is_a_clear_error_and_keeps_acknowledged_rows(
        tiny_disk: Path, images: list[bytes]) -> None:
    with running_worker("unix", "--lance", str(tiny_disk / "db"),
                        workdir=tiny_disk.parent / "w") as worker:
        with Client(worker.location) as client:
            acknowledged, failure = 0, None
            for _ in range(100):  # bounded: 4 MB fills long before
                try:
                    client.table("classify", pa.array(images[:32], pa.binary()),
                                 pa.array([5] * 32, pa.int32()))
                    acknowledged += 1
                except WorkerError as exc:
                    failure = exc
                    break
            assert failure is not None and acknowledged >= 1
            assert failure.kind == "write_failed"
            assert "rolled back" in str(failure)
            # Every acknowledged run is still there and readable; the failed one is not.
            stored = client.table("predictions")
            assert stored.num_rows == acknowledged * 32 * 5
            assert client.table("image_classes").num_rows == 1000  # still serving


def test_recovery_grace_spares_runs_that_may_still_be_in_flight(tmp_path: Path) -> None:
    """Uncommitted rows younger than the grace may be another replica's run: kept, invisible."""
    uri = str(tmp_path / "db")
    sink = WriteBack(uri, 1280)
    orphan = {"image_key": "k", "path": None, "model": "m", "rank": 1, "idx": 1, "label": "x",
              "confidence": 0.5, "run_id": "a" * 32, "created_at": utc_now(),
              "committed": False}
    sink._run(sink.store.append(PREDICTIONS, [orphan]))  # a run that never committed
    sink.close()

    WriteBack(uri, 1280, recovery_grace_seconds=3600).close()
    assert table_counts(tmp_path / "db")[PREDICTIONS] == 1  # young: left for its writer
    WriteBack(uri, 1280).close()
    assert table_counts(tmp_path / "db")[PREDICTIONS] == 0  # no grace: rolled back

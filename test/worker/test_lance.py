"""LanceDB write-back: all-or-nothing runs stored once per (image, model), replay-safe,
with bounded in-flight work, shutdown and recovery.

Real LanceDB in tmp folders and the real model throughout, on real photographs (cropped into
distinct images where a test needs many); failures are injected into the store's append so the
atomicity mechanism itself is what is tested.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from lance_tables import table_counts
from PIL import Image

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import ErrorKind, argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.testing.launch import running_worker
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import IMAGES, RUNS, STAGED, ResultKind, utc_now
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import FunctionError
from vgi_vision.worker.stored import image_schema, ocr_schema, staged_schema, staging
from vgi_vision.worker.vision.model import load_classifier


def classify_args(images: list[bytes], top_k: int = 5) -> pa.RecordBatch:
    return argument_rows([pa.array(images, pa.binary()),
                          pa.array([top_k] * len(images), pa.int32())])


def distinct_photos(fixture_bytes: dict[str, bytes], n: int, first: int = 0) -> list[bytes]:
    """``n`` different images: the photographs cropped at shifting offsets, as small JPEGs."""
    photos = [Image.open(io.BytesIO(data)).convert("RGB").resize((160, 160))
              for data in fixture_bytes.values()]
    out = []
    for i in range(first, first + n):
        shift = i // len(photos)
        crop = photos[i % len(photos)].crop((shift % 32, shift // 32, 128 + shift % 32,
                                             128 + shift // 32))
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    assert len(set(out)) == n
    return out


@pytest.fixture
def images(fixture_bytes: dict[str, bytes]) -> list[bytes]:
    return distinct_photos(fixture_bytes, 40)  # two ticks, many queue batches


def registry_with(sink: WriteBack):
    return build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(), sink))


def stored(registry) -> pa.Table:
    return invoke_table_function(registry.get("predictions"), argument_rows([], 1))


def test_failure_in_second_sub_batch_leaves_nothing(tmp_path: Path, images: list[bytes]) -> None:
    sink = WriteBack(str(tmp_path / "db"), 1280, max_batch=16)
    registry = registry_with(sink)
    classify = registry.get("classify")
    invoke_table_function(classify, classify_args(images[:4]))  # one good run first
    before = table_counts(tmp_path / "db")

    real_append, calls = sink.store.append, []

    async def failing_append(rows: list, *kind: ResultKind) -> None:
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        await real_append(rows, *kind)

    sink.store.append = failing_append
    with pytest.raises(FunctionError) as info:
        invoke_table_function(classify, classify_args(images))
    assert info.value.kind is ErrorKind.WRITE_FAILED
    assert "disk full" in str(info.value) and "rolled back" in str(info.value)
    assert len(calls) > 2  # the run really was written in several sub-batches
    sink.store.append = real_append

    # Nothing of the failed run anywhere, staged or stored; no commit record.
    assert table_counts(tmp_path / "db") == before
    assert stored(registry).num_rows == 4 * 5
    # The queue keeps running: the next run lands whole.
    invoke_table_function(classify, classify_args(images[4:7], top_k=2))
    assert stored(registry).num_rows == 20 + 6
    sink.close()
    assert table_counts(tmp_path / "db") == {IMAGES: 7, STAGED: 0, RUNS: 2}


def test_inference_waits_for_a_slow_writer(tmp_path: Path, images: list[bytes]) -> None:
    """With max_in_flight=1, a tick cannot hand over a batch before the previous one landed."""
    sink = WriteBack(str(tmp_path / "db"), 1280, max_in_flight=1, window_seconds=0.01)
    gate = threading.Event()  # the "disk" is stuck until the test opens it
    events: list[str] = []
    real_append, real_write = sink.store.append, sink.write

    async def stuck_append(rows: list, *kind: ResultKind) -> None:
        while not gate.is_set():
            await asyncio.sleep(0.01)
        await real_append(rows, *kind)

    def traced_write(run_id: str, rows: list, *kind: ResultKind) -> None:
        events.append("requested")
        real_write(run_id, rows, *kind)
        events.append("accepted")

    def traced_acquire() -> bool:
        """The in-flight bound's wait, recorded when it has to wait at all."""
        if real_acquire(blocking=False):
            return True
        events.append("blocked")
        return real_acquire()

    real_acquire = sink._in_flight.acquire
    sink._in_flight.acquire = traced_acquire
    sink.store.append = stuck_append
    sink.write = traced_write
    registry = registry_with(sink)
    scan = threading.Thread(target=invoke_table_function,
                            args=(registry.get("classify"), classify_args(images * 2)))
    scan.start()  # 80 images: three ticks, three batches
    try:
        deadline = time.monotonic() + 120
        while len(events) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)  # the second batch is either accepted (a broken bound) or waits
        assert events == ["requested", "accepted", "requested", "blocked"]
    finally:
        gate.set()
        scan.join(timeout=120)
    assert [e for e in events if e != "blocked"] == ["requested", "accepted"] * 3
    sink.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_max_in_flight_is_validated(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        WriteBack(str(tmp_path / "db"), 1280, max_in_flight=bad)


def test_predictions_page_over_http(tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """More stored rows than one page: every row comes back once over continuations."""
    photos = distinct_photos(fixture_bytes, 120)
    with running_worker("http", "--lance", str(tmp_path / "db"), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            classified = client.table("classify", pa.array(photos, pa.binary()),
                                      pa.array([5] * 120, pa.int32()))
            assert classified.num_rows == 600
            before = client.requests
            rows = client.table("predictions")
            assert client.requests - before >= 2  # more than one page
            keys = list(zip(rows.column("image_key").to_pylist(),
                            rows.column("rank").to_pylist(), strict=True))
            assert len(rows) == len(set(keys)) == 600
            # 120 images, 4 runs (32 images per call)
            assert len({k[0] for k in keys}) == 120
            assert len(set(rows.column("run_id").to_pylist())) == 4
            assert sorted(rows.column("rank").to_pylist()) == sorted([1, 2, 3, 4, 5] * 120)


def test_predictions_without_lance_is_a_clear_error(client) -> None:
    with pytest.raises(WorkerError, match="--lance") as info:
        client.table("predictions")
    assert info.value.kind is ErrorKind.NOT_CONFIGURED


def visible_rows(uri: Path) -> list[tuple]:
    """What readers see, read straight from the tables (no worker, so no recovery runs)."""

    async def read() -> list[tuple]:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(IMAGES)
        rows = (await table.query().to_arrow()).to_pylist()
        table.close()
        db.close()
        return sorted((r["image_key"], r["run_id"], tuple(r["idx"]), len(r["vector"]))
                      for r in rows)

    return asyncio.run(read())


def test_sigterm_drains_and_kill9_recovers(tmp_path: Path, fixture_bytes: dict[str, bytes]
                                           ) -> None:
    db = tmp_path / "db"
    first = distinct_photos(fixture_bytes, 8)
    with running_worker("unix", "--lance", str(db), workdir=tmp_path / "w1") as worker:
        with Client(worker.location) as client:
            acknowledged = client.table("classify", pa.array(first, pa.binary()))
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=60) == 0
        assert not (tmp_path / "w1" / "worker.sock").exists()  # no stale socket left
    assert table_counts(db) == {IMAGES: 8, STAGED: 0, RUNS: 1}
    assert acknowledged.num_rows == 40
    seen = visible_rows(db)

    # kill -9 between the two pages of one call (32 images a page): the call provably has not
    # finished, and its first page's rows are on disk, staged, when the signal lands.
    with running_worker("unix", "--lance", str(db), workdir=tmp_path / "w2") as worker:
        with Client(worker.location) as client:
            two_pages = classify_args(distinct_photos(fixture_bytes, 64, first=8))
            header, page = client.request({"op": "scan", "function": "classify", "token": None},
                                          two_pages)
            assert header["done"] is False and page is not None and page.num_rows == 32 * 5
            deadline = time.monotonic() + 60
            while table_counts(db)[STAGED] != 32 and time.monotonic() < deadline:
                time.sleep(0.05)  # until the page's rows have landed
            assert table_counts(db)[STAGED] == 32
            os.kill(worker.process.pid, signal.SIGKILL)
            assert worker.process.wait(timeout=60) == -signal.SIGKILL
            with pytest.raises(ConnectionError):
                client.request({"op": "scan", "function": "classify",
                                "token": header["token"]}, two_pages)
    # Left behind by the killed call, and invisible: readers see the acknowledged run only,
    # whole (predictions with their embedding), before and after the restart.
    assert table_counts(db) == {IMAGES: 8, STAGED: 32, RUNS: 1}
    assert visible_rows(db) == seen
    assert all(width == 1280 and len(idx) == 5 for _, _, idx, width in seen)
    with running_worker("unix", "--lance", str(db), workdir=tmp_path / "w3") as worker:
        with Client(worker.location) as client:
            visible = client.table("predictions")
    assert table_counts(db) == {IMAGES: 8, STAGED: 0, RUNS: 1}
    assert visible_rows(db) == seen
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
        tiny_disk: Path, fixture_bytes: dict[str, bytes]) -> None:
    with running_worker("unix", "--lance", str(tiny_disk / "db"),
                        workdir=tiny_disk.parent / "w") as worker:
        with Client(worker.location) as client:
            acknowledged, failure = 0, None
            for attempt in range(100):  # bounded: 4 MB fills long before
                try:
                    photos = distinct_photos(fixture_bytes, 32, first=32 * attempt)
                    client.table("classify", pa.array(photos, pa.binary()),
                                 pa.array([5] * 32, pa.int32()))
                    acknowledged += 1
                except WorkerError as exc:
                    failure = exc
                    break
            assert failure is not None and acknowledged >= 1
            assert failure.kind is ErrorKind.WRITE_FAILED
            assert "rolled back" in str(failure)
            # Every acknowledged run is still there and readable; the failed one is not.
            stored = client.table("predictions")
            assert stored.num_rows == acknowledged * 32 * 5
            assert client.table("image_classes").num_rows == 1000  # still serving


def test_recovery_grace_spares_runs_that_may_still_be_in_flight(tmp_path: Path) -> None:
    """Staged rows younger than the grace may be another replica's run: kept, invisible."""
    uri = str(tmp_path / "db")
    sink = WriteBack(uri, 1280)
    orphan = {"image_key": "k", "model": "m", "path": None, "top_k": 1, "idx": [1],
              "label": ["x"], "confidence": [0.5], "run_id": "a" * 32, "created_at": utc_now(),
              "vector": [0.0] * 1280, "input_row": 0}
    sink._run(sink.store.append([orphan]))  # a run that never committed
    sink.close()

    WriteBack(uri, 1280, recovery_grace_seconds=3600).close()
    assert table_counts(tmp_path / "db")[STAGED] == 1  # young: left for its writer
    WriteBack(uri, 1280).close()
    assert table_counts(tmp_path / "db") == {IMAGES: 0, STAGED: 0, RUNS: 0}  # rolled back


def test_stored_schemas_are_the_function_columns_unchanged_on_disk() -> None:
    """The stored schemas are derived from the columns of classify, predictions, ocr,
    stored_text and embed; they must stay byte for byte what existing stores hold (these are
    the literal schemas the derivation replaced)."""
    key = {b"lance-schema:unenforced-primary-key": b"true"}
    keys = [pa.field(n, pa.string(), nullable=False, metadata=key) for n in ("image_key", "model")]
    images = pa.schema(keys + [
        ("path", pa.string()), ("top_k", pa.int32()),
        ("idx", pa.list_(pa.int32())), ("label", pa.list_(pa.string())),
        ("confidence", pa.list_(pa.float64())), ("run_id", pa.string()),
        ("created_at", pa.timestamp("us")), ("vector", pa.list_(pa.float32(), 1280)),
        pa.field("thumbnail", pa.binary()), pa.field("phash", pa.uint64()),
    ])
    ocr = pa.schema(keys + [
        ("path", pa.string()), ("min_confidence", pa.float64()),
        ("text", pa.list_(pa.string())), ("confidence", pa.list_(pa.float64())),
        ("x0", pa.list_(pa.int32())), ("y0", pa.list_(pa.int32())),
        ("x1", pa.list_(pa.int32())), ("y1", pa.list_(pa.int32())),
        ("run_id", pa.string()), ("created_at", pa.timestamp("us")),
    ])
    for derived, literal in ((image_schema(1280), images), (ocr_schema(), ocr),
                             (staged_schema(1280), staging(images)),
                             (staging(ocr_schema()), staging(ocr))):
        assert derived.equals(literal, check_metadata=True)
        assert derived.serialize().to_pybytes() == literal.serialize().to_pybytes()

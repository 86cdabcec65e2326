"""Store maintenance: the write-back tables stay compact over many runs without changing what
is stored, a scan of a pinned version outlives a compaction, and compaction racing other
workers' commits never fails a run or duplicates an image.

Real LanceDB in tmp folders; the real model and a real HTTP worker where runs are classified.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from test_lance import classify_args, distinct_photos, registry_with, stored, table_counts

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.testing.launch import running_worker
from vgi_vision.worker.lance.kinds import IMAGES, RUNS, STAGED, utc_now
from vgi_vision.worker.lance.store import VERSION_RETENTION, PredictionStore
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.ticks import run_ticks

pytestmark = pytest.mark.slow

NO_ARGS = argument_rows([], 1)  # a nullary call


def rows(run_id: str, keys: list[int], top_k: int) -> list[dict]:
    """Stored-image rows as classify stages them (synthetic values, so runs are cheap)."""
    now = utc_now()
    return [{"image_key": f"{key:064x}", "model": "m", "path": f"{key}.jpg", "top_k": top_k,
             "idx": list(range(key, key + top_k)), "label": [f"c{key}"] * top_k,
             "confidence": [0.5] * top_k, "run_id": run_id, "created_at": now,
             "vector": [float(key)] * 1280, "thumbnail": b"jpeg", "input_row": row}
            for row, key in enumerate(keys)]


def run_many(sink: WriteBack, runs: int) -> None:
    """``runs`` runs of 3 images each, overlapping earlier runs, every 7th one wider (so
    stored rows are replaced as well as added)."""
    for run in range(runs):
        run_id = f"{run:032x}"
        keys = [run, run + 1, (run * 7) % (runs + 1)]
        sink.write(run_id, rows(run_id, keys, top_k=3 if run % 7 else 5))
        sink.finish(run_id, len(keys))


def images_table(sink: WriteBack) -> list[tuple]:
    table = sink._run(sink.store.images.query().to_arrow())
    return sorted(tuple(row.values()) for row in table.drop_columns(["created_at"]).to_pylist())


def test_many_runs_stay_compact_and_store_the_same_rows(tmp_path: Path) -> None:
    """200 runs: with maintenance checked every 10 commits the tables stay small, and
    ``images`` holds exactly what it holds without maintenance, each image once."""
    plain = WriteBack(str(tmp_path / "plain"), 1280, window_seconds=0.005, compact_every=0)
    compact = WriteBack(str(tmp_path / "compact"), 1280, window_seconds=0.005, compact_every=10)
    run_many(plain, 200)
    run_many(compact, 200)
    compact.close()  # waits for a maintenance round still running
    plain.close()
    compact = WriteBack(str(tmp_path / "compact"), 1280, compact_every=0)
    plain = WriteBack(str(tmp_path / "plain"), 1280, compact_every=0)
    assert sink_fragments(plain, IMAGES) >= 100  # what nothing compacting looks like
    # Compacted once the rows since the last compaction are 10% of ~200 (a run adds one or
    # two), checked every 10 commits: about 30 fragments at most, whatever the run count.
    assert sink_fragments(compact, IMAGES) <= 40
    assert sink_fragments(compact, RUNS) <= 40
    assert sink_fragments(compact, STAGED) <= 1
    stored_rows = images_table(compact)
    assert stored_rows == images_table(plain)
    assert len(stored_rows) == len({row[:2] for row in stored_rows}) == 201
    widened = [row for row in stored_rows if row[3] == 5]
    assert widened  # wider runs replaced rows, and compaction kept the replacements
    compact.close()
    plain.close()
    assert table_counts(tmp_path / "compact") == {IMAGES: 201, STAGED: 0, RUNS: 200}


def sink_fragments(sink: WriteBack, name: str) -> int:
    return sink._run(sink.store.fragments(name))


def test_maintenance_failure_is_logged_and_the_run_succeeds(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    sink = WriteBack(str(tmp_path / "db"), 1280, window_seconds=0.005, compact_every=1)

    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError("object store unavailable (injected)")

    sink.store.images.optimize = broken
    run_id = uuid.uuid4().hex
    sink.write(run_id, rows(run_id, [1, 2], top_k=3))
    sink.finish(run_id, 2)  # the maintenance after this commit fails
    sink.maintain()
    run_id = uuid.uuid4().hex
    sink.write(run_id, rows(run_id, [3], top_k=3))
    sink.finish(run_id, 1)
    sink.close()
    assert "maintenance of images skipped" in caplog.text
    assert table_counts(tmp_path / "db") == {IMAGES: 3, STAGED: 0, RUNS: 2}


def compact_from_another_replica(uri: Path, retention: timedelta) -> None:
    async def compact() -> None:
        store = await PredictionStore.open(str(uri), 1280, recovery_grace_seconds=3600)
        assert all((await store.maintain(retention=retention, force=True)).values())
        store.close()

    asyncio.run(compact())


def test_a_scan_started_before_compaction_finishes_with_the_same_rows(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """predictions() pages a pinned version: more runs commit and another replica compacts
    every table between its pages, and the scan still returns exactly the rows of the version
    it started on (the version's files are younger than the retention, so they stay)."""
    db = tmp_path / "db"
    photos = distinct_photos(fixture_bytes, 150)
    with running_worker("http", "--lance", str(db), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            client.table("classify", pa.array(photos[:120], pa.binary()))  # 4 runs of 32
            expected = client.table("predictions")
            assert expected.num_rows == 600  # two pages
            request = {"op": "scan", "function": "predictions", "token": None}
            header, first = client.request(request, NO_ARGS)
            assert not header["done"] and 0 < first.num_rows < 600
            # After the first page: new runs (new images, and wider rows for old ones) ...
            client.table("classify", pa.array(photos[100:150], pa.binary()),
                         pa.array([7] * 50, pa.int32()))
            # ... and a full maintenance round with the default retention.
            compact_from_another_replica(db, VERSION_RETENTION)
            pages = [first]
            while not header["done"]:
                header, page = client.request({**request, "token": header["token"]},
                                              NO_ARGS)
                if page is not None:
                    pages.append(page)
            resumed = pa.Table.from_batches(pages)
            assert sorted(resumed.to_pylist(), key=str) == sorted(
                expected.to_pylist(), key=str)
            assert client.table("predictions").num_rows == 100 * 5 + 50 * 7

            # Why the retention matters: removing every older version under a scan breaks it.
            header, first = client.request(request, NO_ARGS)
            client.table("classify", pa.array(photos[:1], pa.binary()),
                         pa.array([9], pa.int32()))
            compact_from_another_replica(db, timedelta(milliseconds=1))
            with pytest.raises(WorkerError, match="(?i)not found|no such file|version"):
                while not header["done"]:
                    header, _ = client.request({**request, "token": header["token"]},
                                               NO_ARGS)


def test_the_workers_own_maintenance_keeps_a_pinned_scan_readable(tmp_path: Path) -> None:
    """The write-back's own maintenance round (what a worker runs every few commits), between
    two pages of predictions(): the scan finishes with the rows of the version it started on,
    because that version's files are younger than the retention the worker keeps."""
    sink = WriteBack(str(tmp_path / "db"), 1280, window_seconds=0.005, compact_every=0)
    for run in range(4):  # 200 images, 600 prediction rows: two pages
        run_id = uuid.uuid4().hex
        sink.write(run_id, rows(run_id, list(range(run * 50, run * 50 + 50)), top_k=3))
        sink.finish(run_id, 50)
    spec = registry_with(sink).get("predictions")
    expected = invoke_table_function(spec, NO_ARGS)
    args = spec.resolve(NO_ARGS)
    state = spec.impl.initial_state(args)
    pages = [run_ticks(spec, args, state, max_ticks=1)]
    assert not pages[0].finished and pages[0].batch is not None
    run_id = uuid.uuid4().hex  # then new images, and wider rows for old ones ...
    sink.write(run_id, rows(run_id, list(range(150, 250)), top_k=5))
    sink.finish(run_id, 100)
    sink.maintain()  # ... and the worker's own compaction
    assert sink._run(sink.store.fragments(IMAGES)) == 1
    while not pages[-1].finished:
        pages.append(run_ticks(spec, args, state, max_ticks=1))
    resumed = pa.Table.from_batches([p.batch for p in pages if p.batch is not None])
    assert sorted(resumed.to_pylist(), key=str) == sorted(expected.to_pylist(), key=str)
    assert invoke_table_function(spec, NO_ARGS).num_rows == 150 * 3 + 100 * 5
    sink.close()


def test_concurrent_writers_and_compaction_store_each_image_once(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """Two workers commit overlapping runs, each compacting after every commit of its own,
    while a third compacts in a loop: every run succeeds and each image is stored once."""
    photos = distinct_photos(fixture_bytes, 64)
    uri = str(tmp_path / "db")
    sinks = [WriteBack(uri, 1280, compact_every=1) for _ in range(2)]
    registries = [registry_with(sink) for sink in sinks]
    errors: list[BaseException] = []
    writing = threading.Event()
    rounds = {"maintenance": 0}

    def classify_all(registry) -> None:
        try:
            for start in range(0, 48, 8):
                invoke_table_function(registry.get("classify"),
                                      classify_args(photos[start:start + 16], top_k=2))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def compact_while_writing() -> None:
        async def loop() -> None:
            store = await PredictionStore.open(uri, 1280, recovery_grace_seconds=3600)
            while writing.is_set():
                await store.maintain(force=True)
                rounds["maintenance"] += 1
            store.close()

        asyncio.run(loop())

    writing.set()
    compactor = threading.Thread(target=compact_while_writing)
    compactor.start()
    threads = [threading.Thread(target=classify_all, args=(r,)) for r in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    writing.clear()
    compactor.join(timeout=120)
    assert not errors
    assert rounds["maintenance"] >= 2
    rows_ = stored(registries[0])
    keys = list(zip(rows_.column("image_key").to_pylist(), rows_.column("rank").to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) == 56 * 2
    for sink in sinks:
        sink.close()
    assert table_counts(tmp_path / "db") == {IMAGES: 56, STAGED: 0, RUNS: 12}


def test_a_commit_conflict_lance_did_not_settle_is_retried_without_duplicates(
        tmp_path: Path) -> None:
    """Lance settles the races above itself (no writer ever saw a conflict against a real
    compaction); should one reach the commit anyway, the commit is repeated. Injected here
    after the merge and the run record landed, the worst place: the repeat finds the run
    committed and only deletes the staged rows."""
    sink = WriteBack(str(tmp_path / "db"), 1280, window_seconds=0.005, compact_every=0)
    real_delete, calls = sink.store.staged.delete, []

    async def conflicting_once(where: str) -> object:
        calls.append(where)
        if len(calls) == 1:
            raise RuntimeError("lance error: Retryable commit conflict for version 9: This "
                               "Delete transaction was preempted by concurrent transaction "
                               "Rewrite at version 9. Please retry. (injected)")
        return await real_delete(where)

    sink.store.staged.delete = conflicting_once
    run_id = uuid.uuid4().hex
    sink.write(run_id, rows(run_id, [1, 2, 3], top_k=3))
    sink.finish(run_id, 3)
    assert len(calls) == 2
    sink.store.staged.delete = real_delete
    sink.close()
    assert table_counts(tmp_path / "db") == {IMAGES: 3, STAGED: 0, RUNS: 1}

"""Write-back under replays and retries: a committed run never changes, and every (image,
model) is stored once however often it is classified, by whichever worker.

Real HTTP worker, real LanceDB, real model, distinct real photographs.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from test_lance import classify_args, distinct_photos, registry_with, stored, table_counts

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import ErrorKind, argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.testing.launch import running_worker
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import IMAGES, RUNS, STAGED, ResultKind
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import FunctionError
from vgi_vision.worker.vision.model import load_classifier


def snapshot(table: pa.Table) -> list[tuple]:
    """Every stored prediction row, all columns, in a stable order."""
    return sorted(tuple(row.values()) for row in table.drop_columns(["input_row"]).to_pylist())


def scan_request(client: Client, args: pa.RecordBatch, token: str | None
                 ) -> tuple[dict, pa.RecordBatch | None]:
    return client.request({"op": "scan", "function": "classify", "token": token}, args)


def test_replayed_tokens_never_change_a_committed_run(tmp_path: Path,
                                                      fixture_bytes: dict[str, bytes]) -> None:
    """A replayed continuation answers the same page again and writes nothing: before the
    run commits (its rows are merged once) and after it (mid-scan and final tokens)."""
    args = classify_args(distinct_photos(fixture_bytes, 70))  # three requests of 32, 32, 6
    with running_worker("http", "--lance", str(tmp_path / "db"), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            first, page1 = scan_request(client, args, None)
            mid = first["token"]
            second, page2 = scan_request(client, args, mid)
            # Replayed while the run is still open: the same page, the same next position.
            again, page2_again = scan_request(client, args, mid)
            assert not again["done"] and page2_again == page2
            final_token = second["token"]
            last, page3 = scan_request(client, args, final_token)
            assert last["done"] and not first["done"] and not second["done"]
            assert sum(p.num_rows for p in (page1, page2, page3)) == 70 * 5
            committed = snapshot(client.table("predictions"))
            assert len(committed) == 70 * 5
            assert len({row[0] for row in committed}) == 70

            # After the commit: the mid-scan and the final token, each replayed twice.
            for token, page, done in [(mid, page2, False), (final_token, page3, True)] * 2:
                header, replayed = scan_request(client, args, token)
                assert header["done"] is done and replayed == page
                assert snapshot(client.table("predictions")) == committed
            counts = table_counts(tmp_path / "db")
            assert counts == {IMAGES: 70, STAGED: 0, RUNS: 1}


def test_a_mid_scan_token_replayed_last_stages_nothing(tmp_path: Path,
                                                      fixture_bytes: dict[str, bytes]) -> None:
    """After the commit, the final token and then a mid-scan token are replayed, and nothing
    comes after: no later request of the run checks its commit and clears what a replay
    staged, so a replay that wrote again would leave its rows behind for a committed run."""
    args = classify_args(distinct_photos(fixture_bytes, 70))  # three requests of 32, 32, 6
    with running_worker("http", "--lance", str(tmp_path / "db"), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            first, _ = scan_request(client, args, None)
            second, _ = scan_request(client, args, first["token"])
            last, _ = scan_request(client, args, second["token"])
            assert last["done"]
            committed = snapshot(client.table("predictions"))
            for token, done in [(second["token"], True), (first["token"], False)]:
                header, _ = scan_request(client, args, token)
                assert header["done"] is done
            assert snapshot(client.table("predictions")) == committed
    # The worker stopped cleanly, which drains write-back: every batch it took has landed.
    assert worker.process is not None and worker.process.returncode == 0
    assert table_counts(tmp_path / "db") == {IMAGES: 70, STAGED: 0, RUNS: 1}


def test_reclassifying_stored_images_stores_each_once(tmp_path: Path,
                                                      fixture_bytes: dict[str, bytes]) -> None:
    """Re-run queries, a query that failed half-way and is run again, duplicates within one
    call, and another worker on the same tables: one set of rows per image and model."""
    photos = distinct_photos(fixture_bytes, 40)
    uri = str(tmp_path / "db")
    sink = WriteBack(uri, 1280)
    registry = registry_with(sink)
    classify = registry.get("classify")
    invoke_table_function(classify, classify_args(photos[:10], top_k=3))
    once = snapshot(stored(registry))
    assert len(once) == 30

    invoke_table_function(classify, classify_args(photos[:10], top_k=3))  # the same query
    invoke_table_function(classify, classify_args(photos[:10] * 3, top_k=2))  # narrower
    assert snapshot(stored(registry)) == once

    real_append = sink.store.append
    last_key = hashlib.sha256(photos[-1]).hexdigest()

    async def failing_batch_of_last_image(rows: list, *kind: ResultKind) -> None:
        # Whichever batch the queue's coalescing puts the last image in fails (one batch or
        # the last of several, depending on timing): the run cannot complete either way.
        if any(row["image_key"] == last_key for row in rows):
            raise OSError("lost connection to storage (injected)")
        await real_append(rows, *kind)

    sink.store.append = failing_batch_of_last_image  # a query over all 40 fails ...
    with pytest.raises(FunctionError, match="rolled back"):
        invoke_table_function(classify, classify_args(photos, top_k=3))
    sink.store.append = real_append
    assert snapshot(stored(registry)) == once
    invoke_table_function(classify, classify_args(photos, top_k=3))  # ... and is run again
    rows = stored(registry)
    assert rows.num_rows == 40 * 3
    assert snapshot(rows.filter(pa.compute.is_in(rows.column("image_key"), pa.array(
        [r[0] for r in once])))) == once  # the first ten kept their rows and run

    # A second worker on the same tables (a sub-batch retried elsewhere) stores nothing new;
    # a wider top_k replaces an image's set instead of adding a second one.
    other = WriteBack(uri, 1280)
    other_registry = registry_with(other)
    invoke_table_function(other_registry.get("classify"), classify_args(photos[:20], top_k=3))
    invoke_table_function(other_registry.get("classify"), classify_args(photos[:1], top_k=7))
    other.close()
    rows = stored(registry)
    assert rows.num_rows == 39 * 3 + 7
    keys = list(zip(rows.column("image_key").to_pylist(), rows.column("rank").to_pylist(),
                    strict=True))
    assert len(set(keys)) == len(keys)
    similar = invoke_table_function(registry.get("similar"), argument_rows(
        [pa.array(photos[:1], pa.binary()), pa.array([40], pa.int32())]))
    assert similar.num_rows == 40  # one embedding per image
    assert len(set(similar.column("image_key").to_pylist())) == 40
    sink.close()
    assert table_counts(tmp_path / "db")[IMAGES] == 40


def test_one_image_under_two_models_is_stored_once_per_model(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """The shipped fp32 model and its int8 quantization classify the same image into one
    store: two stored rows, one per model, each holding that model's own result."""
    photo = distinct_photos(fixture_bytes, 1)
    sink = WriteBack(str(tmp_path / "db"), 1280)
    classified = {}
    for model in ("efficientnet-lite0", "efficientnet-lite0-int8"):
        registry = build_registry(VisionContext(load_classifier(model),
                                                PathPolicy.unrestricted(), sink))
        rows = invoke_table_function(registry.get("classify"), classify_args(photo, top_k=3))
        classified[model] = (rows.column("idx").to_pylist(),
                             rows.column("confidence").to_pylist())
    assert classified["efficientnet-lite0"] != classified["efficientnet-lite0-int8"]
    images = sink._run(sink.store.images.query().to_arrow()).to_pylist()
    sink.close()
    assert len(images) == 2 and len({row["image_key"] for row in images}) == 1
    assert {row["model"]: (row["idx"], row["confidence"]) for row in images} == classified


def test_workers_committing_the_same_images_at_once_store_them_once(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """Two workers on one store commit overlapping runs concurrently: each image once."""
    photos = distinct_photos(fixture_bytes, 64)
    uri = str(tmp_path / "db")
    sinks = [WriteBack(uri, 1280) for _ in range(2)]
    registries = [registry_with(sink) for sink in sinks]
    errors: list[BaseException] = []

    def classify_all(registry, rounds: int) -> None:
        try:
            for start in range(0, rounds * 8, 8):
                invoke_table_function(registry.get("classify"),
                                      classify_args(photos[start:start + 16], top_k=2))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=classify_all, args=(r, 6)) for r in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors
    rows = stored(registries[0])
    keys = list(zip(rows.column("image_key").to_pylist(), rows.column("rank").to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) == 56 * 2
    for sink in sinks:
        sink.close()
    assert table_counts(tmp_path / "db")[IMAGES] == 56


def runs_of(uri: Path) -> dict[str, str | None]:
    """run id -> job id of every committed run."""
    async def read() -> dict[str, str | None]:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(RUNS)
        rows = (await table.query().to_arrow()).to_pylist()
        table.close()
        db.close()
        return {row["run_id"]: row["job_id"] for row in rows}

    return asyncio.run(read())


def test_a_job_id_travels_with_a_scan_over_http_and_survives_replays(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """The job named by a scan's first request is recorded with its run, through
    continuation tokens (the later requests carry none) and their replays; a malformed job is
    refused before anything is staged; the classify command's sub-batches to a --location
    worker are one job."""
    args = classify_args(distinct_photos(fixture_bytes, 70))  # three requests of 32, 32, 6
    job = "a1" * 16
    uri = tmp_path / "db"
    with running_worker("http", "--lance", str(uri), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            for bad in ("../x", "A1" * 16, 7, "a1" * 17):
                with pytest.raises(WorkerError) as refused:
                    client.request({"op": "scan", "function": "classify", "token": None,
                                    "job": bad}, args)
                assert refused.value.kind == ErrorKind.BAD_REQUEST
            header, _ = client.request({"op": "scan", "function": "classify", "token": None,
                                        "job": job}, args)
            while not header["done"]:
                token = header["token"]
                header, _ = scan_request(client, args, token)
            scan_request(client, args, token)  # the last continuation, replayed
            assert runs_of(uri) == {next(iter(runs_of(uri))): job}
            assert table_counts(uri) == {IMAGES: 70, STAGED: 0, RUNS: 1}
        photos = tmp_path / "photos"
        photos.mkdir()
        for i, data in enumerate(distinct_photos(fixture_bytes, 5, first=70)):
            (photos / f"{i}.jpg").write_bytes(data)
        done = subprocess.run([sys.executable, "-m", "vgi_vision", "classify", str(photos),
                               "--location", worker.location, "--chunk-files", "2",
                               "--format", "csv"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    jobs = [j for j in runs_of(uri).values() if j != job]
    assert len(jobs) >= 3 and len(set(jobs)) == 1 and jobs[0] is not None  # 3 chunks, 1 job


def test_a_runs_table_without_job_ids_is_upgraded_without_loss(tmp_path: Path) -> None:
    """A store written before jobs existed: its runs gain a NULL job id, none is lost."""
    uri = tmp_path / "db"

    async def write_old() -> None:
        db = await lancedb.connect_async(str(uri))
        await db.create_table(RUNS, data=pa.table({
            "run_id": ["b" * 32], "images": pa.array([3], pa.int64()),
            "committed_at": pa.array([None], pa.timestamp("us"))}))
        db.close()

    asyncio.run(write_old())
    WriteBack(str(uri), 1280).close()
    assert runs_of(uri) == {"b" * 32: None}

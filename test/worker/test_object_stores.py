"""Write-back stores on object storage (``--lance s3://bucket/store``), on a real S3-protocol
server on loopback: commits, reads, recovery and compaction, and two writers at once.

Configured only by the standard AWS variables (``s3_env``), as a deployment would be.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import duckdb
import pytest
from conftest import DATA, EXPECTED_TOP5
from lance_tables import table_counts

import vgi_vision
from vgi_vision.testing.launch import running_worker
from vgi_vision.testing.s3server import LocalS3
from vgi_vision.worker.lance.kinds import IMAGES, RUNS, STAGED, utc_now
from vgi_vision.worker.lance.store import PredictionStore
from vgi_vision.worker.lance.writeback import WriteBack

BUCKET = "stores"
DIM = 1280


@pytest.fixture(scope="module")
def bucket(s3: LocalS3) -> LocalS3:
    s3.create_bucket(BUCKET)
    s3.create_bucket("store-photos")
    for name in EXPECTED_TOP5:
        s3.put("store-photos", f"photos/{name}", (DATA / name).read_bytes())
    return s3


@pytest.fixture
def store_uri(bucket: LocalS3, s3_env: LocalS3) -> str:
    """A store of its own for each test, in the bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


def rows(run_id: str, keys: list[int], top_k: int = 2) -> list[dict]:
    """Stored-image rows as classify stages them (synthetic values: the store is tested)."""
    now = utc_now()
    return [{"image_key": f"{key:064x}", "model": "m", "path": f"s3://x/{key}.jpg",
             "top_k": top_k, "idx": list(range(key, key + top_k)),
             "label": [f"c{key}"] * top_k, "confidence": [0.5] * top_k, "run_id": run_id,
             "created_at": now, "vector": [float(key)] * DIM, "thumbnail": b"jpeg",
             "input_row": row}
            for row, key in enumerate(keys)]


def test_two_writers_on_one_object_store_store_each_image_once(store_uri: str,
                                                               bucket: LocalS3) -> None:
    """Two writers commit overlapping runs at once, each compacting after every commit: the
    merges race on the same new images and Lance's conditional commits settle every race."""
    refused = bucket.tap.statuses[412]
    sinks = [WriteBack(store_uri, DIM, compact_every=1) for _ in range(2)]
    errors: list[BaseException] = []
    runs_per_writer = 8

    def commit_runs(writer: int) -> None:
        try:
            for run in range(runs_per_writer):
                run_id = f"{writer}{run:031x}"
                keys = list(range(run * 3, run * 3 + 6))  # overlaps its neighbours
                sinks[writer].write(run_id, rows(run_id, keys))
                sinks[writer].finish(run_id, len(keys))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=commit_runs, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for sink in sinks:
        sink.close()
    assert not errors
    # The race was real: the server refused some conditional commit (412), which Lance retried.
    assert bucket.tap.statuses[412] > refused
    distinct = len(set(range(runs_per_writer * 3 + 3)))
    assert table_counts(store_uri) == {IMAGES: distinct, STAGED: 0, RUNS: 2 * runs_per_writer}


def test_staged_rows_a_crash_left_are_recovered_on_start(store_uri: str) -> None:
    async def crash_after_staging() -> None:
        store = await PredictionStore.open(store_uri, DIM)
        await store.append(rows("a" * 32, [1, 2, 3]))
        store.close()  # never committed: as a worker killed mid-run leaves it

    asyncio.run(crash_after_staging())
    assert table_counts(store_uri) == {IMAGES: 0, STAGED: 3, RUNS: 0}
    WriteBack(store_uri, DIM).close()
    assert table_counts(store_uri) == {IMAGES: 0, STAGED: 0, RUNS: 0}


def test_a_worker_classifies_urls_into_an_object_store(store_uri: str, bucket: LocalS3,
                                                       tmp_path: Path) -> None:
    """A socket worker reading images from one bucket and storing results in another:
    ``predictions()`` and ``similar()`` read them back, paths are the URLs."""
    with running_worker("unix", "--data-root", "s3://store-photos/photos/", "--lance",
                        store_uri, env=bucket.env(), workdir=tmp_path) as worker:
        con = duckdb.connect()
        vgi_vision.attach(con, worker.location)
        try:
            urls = [f"s3://store-photos/photos/{name}" for name in EXPECTED_TOP5]
            con.execute("CREATE TABLE photos AS SELECT unnest(?) AS path", [urls])
            assert con.execute("SELECT count(DISTINCT p.path) FROM photos p, "
                               "vision.classify(p.path, 3) c").fetchone() == (len(urls),)
            stored = con.execute("SELECT DISTINCT path FROM vision.predictions() ORDER BY 1"
                                 ).fetchall()
            assert stored == [(url,) for url in sorted(urls)]
            nearest = con.execute(f"SELECT path FROM vision.similar('{urls[0]}', k := 1)"
                                  ).fetchall()
            assert nearest == [(urls[0],)]
        finally:
            vgi_vision.detach(con)
    assert table_counts(store_uri) == {IMAGES: len(urls), STAGED: 0, RUNS: 1}

"""The vision functions as steps of Ray Data and Daft pipelines, and exactly-once write-back.

Ray runs locally (one session-scoped ``ray.init(num_cpus=2)``), Daft on its native runner.
Results are compared with the same functions through DuckDB SQL, on the real model.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import daft  # the [ray] and [daft] extras are part of [test]
import duckdb
import numpy as np
import pyarrow as pa
import pytest
import ray
from conftest import DATA
from pipeline_store import assert_stored_once, distinct_jpegs, interrupted_job, store_counts

import vgi_vision
from vgi_vision.batch import BatchFunction, BatchSQL
from vgi_vision.errors import BatchFunctionError, WorkerError
from vgi_vision.transports.inprocess import InProcessTransport

pytestmark = pytest.mark.pipelines

PHOTOS = sorted(p for p in DATA.iterdir() if p.is_file())
#: Rows an engine must survive: each gives NULL or no rows for itself only.
HOSTILE = [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, None]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 << 20, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos() -> pa.Table:
    """The test photos and hostile rows, with their paths (absolute, so any actor reads them)."""
    images = [p.read_bytes() for p in PHOTOS] + HOSTILE
    paths = [str(p) for p in PHOTOS] + [f"{DATA}/missing-{i}.jpg" for i in range(len(HOSTILE))]
    return pa.table({"id": list(range(len(images))), "path": paths,
                     "bytes": pa.array(images, pa.binary())})


@pytest.fixture(scope="module")
def sql_results(photos: pa.Table) -> tuple[list[tuple], list[tuple]]:
    """``top_label`` and ``classify(top_k := 3)`` of the same rows through DuckDB SQL."""
    con = duckdb.connect()
    vgi_vision.attach(con, transport=InProcessTransport.start())
    try:
        con.register("photos", photos)
        labels = con.execute("SELECT id, vision.top_label(bytes) FROM photos ORDER BY id"
                             ).fetchall()
        classes = con.execute("SELECT p.id, c.rank, c.label, c.confidence FROM photos p, "
                              "vision.classify(p.bytes, 3) c ORDER BY p.id, c.rank").fetchall()
    finally:
        vgi_vision.detach(con)
    return labels, classes


def assert_same_classes(got: list[tuple], expected: list[tuple]) -> None:
    assert [row[:3] for row in got] == [row[:3] for row in expected]  # ids, ranks, labels
    assert np.allclose([row[3] for row in got], [row[3] for row in expected], atol=1e-6)


def classes_of(table: pa.Table) -> list[tuple]:
    rows = table.select(["id", "rank", "label", "confidence"]).to_pylist()
    return sorted(tuple(r.values()) for r in rows)


# --- the engine-neutral core -------------------------------------------------------------

def test_the_core_survives_pickling_and_hostile_rows(photos: pa.Table, sql_results) -> None:
    import pickle

    labels, classes = sql_results
    top_label = pickle.loads(pickle.dumps(BatchFunction("top_label", "bytes")))
    assert list(zip(*top_label(photos).select(["id", "top_label"]).to_pydict().values(),
                    strict=True)) == labels
    classify = BatchFunction("classify", "path", top_k=3, missing="null")  # as in SQL
    with pytest.raises(WorkerError, match="missing-0.jpg' does not exist"):
        BatchFunction("classify", "path")(photos)
    classify(photos.slice(0, 1))  # a used core (its client built) pickles too
    by_path = pickle.loads(pickle.dumps(classify))(photos)
    assert by_path.column_names == ["id", "path", "bytes", "rank", "idx", "label", "wnid",
                                    "confidence"]
    assert_same_classes(classes_of(by_path), classes)
    for core in (top_label, classify):
        core.close()


def test_the_core_refuses_what_does_not_fit(photos: pa.Table) -> None:
    with pytest.raises(BatchFunctionError, match="no function 'top_lable'"):
        BatchFunction("top_lable", "bytes")(photos)
    with pytest.raises(BatchFunctionError, match="has no parameter k"):
        BatchFunction("classify", "bytes", k=3)(photos)
    with pytest.raises(BatchFunctionError, match="has no column 'image'"):
        BatchFunction("top_label")(photos)
    with pytest.raises(BatchFunctionError, match="takes no image column of type int64"):
        BatchFunction("top_label", "id")(photos)
    with pytest.raises(BatchFunctionError, match="configure an in-process worker"):
        BatchFunction("top_label", location="http://127.0.0.1:1", model="x")
    with pytest.raises(BatchFunctionError, match="give location= too"):
        BatchFunction("top_label", auth_token="t")


# --- Ray Data ----------------------------------------------------------------------------

def test_ray_map_batches_gives_what_sql_gives(ray_local, photos: pa.Table, sql_results,
                                              worker_pool) -> None:
    from vgi_vision.ray import VisionBatch, VisionSQL

    labels, classes = sql_results
    ds = ray.data.from_arrow(photos)
    for remote in ({}, {"location": worker_pool.get("http").location}):
        out = ds.map_batches(VisionBatch, fn_constructor_kwargs={
            "function": "top_label", "image_column": "bytes", **remote},
            concurrency=2, batch_format="pyarrow", batch_size=4)
        assert sorted((r["id"], r["top_label"]) for r in out.take_all()) == labels
        out = ds.map_batches(VisionBatch, fn_constructor_kwargs={
            "function": "classify", "image_column": "bytes", "top_k": 3, **remote},
            concurrency=2, batch_format="pyarrow", batch_size=4)
        table = pa.Table.from_pylist(out.take_all())
        assert_same_classes(classes_of(table), classes)
        for rows in table.group_by("id").aggregate([("rank", "list")]).column("rank_list"):
            assert rows.as_py() == [1, 2, 3]  # one image's rows together, in rank order
    out = ds.map_batches(VisionSQL, fn_constructor_kwargs={
        "sql": "SELECT id, vision.top_label(bytes) AS label FROM batch"},
        concurrency=2, batch_format="pyarrow")
    assert sorted((r["id"], r["label"]) for r in out.take_all()) == labels


def test_ray_reads_binary_files_as_the_issue_shows(ray_local) -> None:
    from vgi_vision.ray import VisionBatch

    ds = ray.data.read_binary_files([str(p) for p in PHOTOS], include_paths=True)
    out = ds.map_batches(VisionBatch, fn_constructor_kwargs={
        "function": "top_label", "image_column": "bytes"}, concurrency=2,
        batch_format="pyarrow")
    labels = {Path(r["path"]).name: r["top_label"] for r in out.take_all()}
    assert labels == {"cat.png": "tiger cat", "coffee.png": "espresso",
                      "grace_hopper.jpg": "graduation cap", "rocket.jpg": "missile"}


# --- Daft --------------------------------------------------------------------------------

def test_daft_udfs_give_what_sql_gives(photos: pa.Table, sql_results, worker_pool) -> None:
    from vgi_vision.daft import udf

    labels, classes = sql_results
    for remote in ({}, {"location": worker_pool.get("unix").location}):
        top_label, classify = udf("top_label", **remote), udf("classify", top_k=3, **remote)
        df = daft.from_arrow(photos)
        got = df.with_column("label", top_label(df["bytes"])).select("id", "label")
        assert sorted(zip(*got.to_pydict().values(), strict=True)) == labels
        exploded = df.with_column("c", classify(df["bytes"])).explode("c") \
            .select("id", daft.col("c").unnest()).where(daft.col("rank").not_null())
        assert_same_classes(classes_of(exploded.to_arrow()), classes)
    top_label = udf("top_label")
    daft.attach_function(top_label, alias="vision_top_label")
    frame = daft.from_arrow(photos)  # noqa: F841 - named in the query below
    got = daft.sql("SELECT id, vision_top_label(bytes) AS label FROM frame").to_pydict()
    assert sorted(zip(got["id"], got["label"], strict=True)) == labels


# --- exactly-once write-back --------------------------------------------------------------

def worker_pids() -> list[int]:
    """Ray Data's map actors, by their process titles (``ray::MapWorker(...)``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(
                    b"ray::MapWorker"):
                pids.append(int(proc.name))
        except OSError:
            continue  # the process ended while we looked
    return pids


@pytest.mark.timeout(600)
def test_ray_write_back_is_exactly_once_when_an_actor_is_killed(ray_local, tmp_path: Path
                                                                ) -> None:
    from vgi_vision.ray import VisionBatch

    store = tmp_path / "store"
    images = distinct_jpegs(400)
    ds = ray.data.from_arrow(pa.table({"bytes": pa.array(images, pa.binary())}))

    def job() -> int:
        out = ds.map_batches(VisionBatch, fn_constructor_kwargs={
            "function": "classify", "image_column": "bytes", "top_k": 1, "lance": str(store)},
            concurrency=2, batch_format="pyarrow", batch_size=20)
        return out.count()

    def kill_an_actor() -> bool:
        pids = worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)  # mid-job: some batches stored, most not
        return bool(pids)

    # Ray restarts the actor and retries its batch: every row is answered.
    assert interrupted_job(job, store, kill_an_actor, before=300) == 400
    assert_stored_once(str(store), 400, rerun=job)


def test_daft_write_back_is_exactly_once_across_reruns(tmp_path: Path) -> None:
    from vgi_vision.daft import udf

    store = str(tmp_path / "store")
    images = distinct_jpegs(60)
    df = daft.from_pydict({"bytes": images})
    for _ in range(2):
        classify = udf("classify", top_k=2, lance=store, batch_size=16)
        rows = df.with_column("c", classify(df["bytes"])).explode("c").count_rows()
        assert rows == 120
        counts = store_counts(Path(store))
        assert counts["images"] == 60 and counts["staged"] == 0


def test_batch_sql_attaches_remote_workers(photos: pa.Table, sql_results, worker_pool
                                           ) -> None:
    labels, _ = sql_results
    query = BatchSQL("SELECT id, vision.top_label(bytes) AS label FROM batch ORDER BY id",
                     location=worker_pool.get("unix").location)
    try:
        assert list(zip(*query(photos).to_pydict().values(), strict=True)) == labels
    finally:
        query.close()

"""Ray Data and Daft steps reading images from, and writing results to, object storage: a
path column of ``s3://`` URLs in, an ``s3://`` write-back store out, on the local S3 server.

The actors and UDF instances are configured by the standard AWS variables only (Ray passes
them to its workers through ``runtime_env``; Daft's native runner shares the process).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import daft
import duckdb
import pyarrow as pa
import pytest
import ray
from conftest import DATA
from pipeline_store import assert_stored_once, store_counts

import vgi_vision
from vgi_vision.testing.s3server import LocalS3
from vgi_vision.transports.inprocess import InProcessTransport

pytestmark = pytest.mark.pipelines

BUCKET = "pipeline-photos"
NAMES = sorted(p.name for p in DATA.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def urls(s3: LocalS3) -> list[str]:
    s3.create_bucket(BUCKET)
    s3.create_bucket("pipeline-stores")
    return [s3.put(BUCKET, f"photos/{name}", (DATA / name).read_bytes()) for name in NAMES]


@pytest.fixture(scope="module")
def ray_with_s3(s3: LocalS3) -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 << 20, configure_logging=False,
             runtime_env={"env_vars": s3.env()})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_labels() -> list[str]:
    """top-1 labels of the local copies, through DuckDB SQL."""
    con = duckdb.connect()
    vgi_vision.attach(con, transport=InProcessTransport.start())
    try:
        return [con.execute(f"SELECT vision.top_label('{DATA / name}')").fetchone()[0]
                for name in NAMES]
    finally:
        vgi_vision.detach(con)


def store_uri() -> str:
    return f"s3://pipeline-stores/{uuid.uuid4().hex}"


@pytest.mark.timeout(600)
def test_ray_classifies_urls_into_an_object_store(ray_with_s3, urls: list[str],
                                                  local_labels: list[str],
                                                  s3_env: LocalS3) -> None:
    from vgi_vision.ray import VisionBatch

    store = store_uri()
    ds = ray.data.from_arrow(pa.table({"path": urls}))

    def job() -> int:
        out = ds.map_batches(VisionBatch, fn_constructor_kwargs={
            "function": "classify", "image_column": "path", "top_k": 1, "lance": store},
            concurrency=1, batch_format="pyarrow", batch_size=2)
        return out.count()

    labels = ds.map_batches(VisionBatch, fn_constructor_kwargs={
        "function": "top_label", "image_column": "path"}, concurrency=1,
        batch_format="pyarrow").take_all()
    assert [r["top_label"] for r in sorted(labels, key=lambda r: r["path"])] == local_labels
    assert job() == len(urls)
    assert_stored_once(store, len(urls), rerun=job)


def test_daft_classifies_urls_into_an_object_store(urls: list[str], local_labels: list[str],
                                                   s3_env: LocalS3) -> None:
    from vgi_vision.daft import udf

    store = store_uri()
    df = daft.from_pydict({"path": urls})
    top_label = udf("top_label")
    assert df.with_column("label", top_label(df["path"])).sort("path").to_pydict()["label"] \
        == local_labels
    for _ in range(2):  # a rerun stores nothing twice
        classify = udf("classify", top_k=2, lance=store, batch_size=2)
        assert df.with_column("c", classify(df["path"])).explode("c").count_rows() == \
            2 * len(urls)
        counts = store_counts(store)
        assert counts["images"] == len(urls) and counts["staged"] == 0


def test_the_core_confines_urls_to_its_prefixes(urls: list[str], local_labels: list[str],
                                                s3_env: LocalS3) -> None:
    from vgi_vision.batch import BatchFunction
    from vgi_vision.errors import WorkerError

    top_label = BatchFunction("top_label", "path",
                              data_root=[str(DATA), f"s3://{BUCKET}/photos/"])
    try:
        assert top_label(pa.table({"path": urls})).column("top_label").to_pylist() == \
            local_labels
        with pytest.raises(WorkerError, match="outside the data roots"):
            top_label(pa.table({"path": [f"s3://{BUCKET}/elsewhere/cat.png"]}))
    finally:
        top_label.close()

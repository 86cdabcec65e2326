"""A node lost mid-job: a two-node Ray cluster on this machine, one node removed while a
write-back job runs; every image is still stored exactly once."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import ray
from pipeline_store import assert_stored_once, distinct_jpegs, interrupted_job
from ray.cluster_utils import Cluster

pytestmark = pytest.mark.pipelines


@pytest.mark.timeout(900)
def test_write_back_is_exactly_once_when_a_node_is_lost(tmp_path: Path) -> None:
    from vgi_vision.ray import VisionBatch

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 128 << 20, "include_dashboard": False})
    doomed = cluster.add_node(num_cpus=1, object_store_memory=128 << 20)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        store = tmp_path / "store"
        images = distinct_jpegs(300)
        ds = ray.data.from_arrow(pa.table({"bytes": pa.array(images, pa.binary())}))

        def job() -> int:
            return ds.map_batches(VisionBatch, fn_constructor_kwargs={
                "function": "classify", "image_column": "bytes", "top_k": 1,
                "lance": str(store)}, concurrency=(1, 2), batch_format="pyarrow",
                batch_size=15).count()

        def remove_a_node() -> bool:
            cluster.remove_node(doomed)  # the node, its actor and its raylet, mid-job
            return True

        assert interrupted_job(job, store, remove_a_node, before=200) == 300
        assert_stored_once(str(store), 300, rerun=job)
    finally:
        ray.shutdown()
        cluster.shutdown()

"""A node lost mid-job: a two-node Ray cluster on this machine, one node removed while a
write-back job runs; every image is still stored exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import ray
from pipeline_store import distinct_jpegs, store_counts, stored_images
from ray.cluster_utils import Cluster

from vgi_vision.batch import clear_unfinished_runs

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

        answered: list[int] = []
        running = threading.Thread(target=lambda: answered.append(job()))
        running.start()
        removed = False
        deadline = time.monotonic() + 400
        while running.is_alive() and not removed and time.monotonic() < deadline:
            stored = stored_images(store)
            if 0 < stored < 200:
                cluster.remove_node(doomed)  # the node, its actor and its raylet, mid-job
                removed = True
            time.sleep(0.2)
        running.join(timeout=600)
        assert removed, "the job ended before the node could be removed mid-job"
        assert answered == [300]
        clear_unfinished_runs(str(store))
        counts = store_counts(store)
        assert counts["images"] == 300 and counts["staged"] == 0
        assert job() == 300
        assert store_counts(store)["images"] == 300
    finally:
        ray.shutdown()
        cluster.shutdown()

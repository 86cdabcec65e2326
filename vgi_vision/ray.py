"""vgi-vision functions as Ray Data steps (``pip install 'vgi-vision[ray]'``).

Ray schedules, streams, retries and restarts actors; these classes only follow its
conventions for ``Dataset.map_batches`` callable classes::

    import ray
    from vgi_vision.ray import VisionBatch, VisionSQL

    ds = ray.data.read_binary_files(paths, include_paths=True)       # columns: bytes, path
    labels = ds.map_batches(VisionBatch, fn_constructor_kwargs={
        "function": "top_label", "image_column": "bytes"}, concurrency=2, batch_format="pyarrow")
    classes = ds.map_batches(VisionBatch, fn_constructor_kwargs={
        "function": "classify", "image_column": "bytes", "top_k": 3, "lance": "store"},
        concurrency=2, batch_format="pyarrow")
    sql = ds.map_batches(VisionSQL, fn_constructor_kwargs={
        "sql": "SELECT path, vision.top_label(bytes) AS label FROM batch"},
        concurrency=2, batch_format="pyarrow")

Each actor runs the model itself with as many onnxruntime threads as Ray gave it CPUs
(``num_cpus``, default 1), or calls running workers with ``location=``. See
:mod:`vgi_vision.batch` for the functions, parameters and results, and docs/distributed.md
for write-back, sizing and clusters.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from vgi_vision.batch import BatchFunction, BatchSQL

try:
    import ray
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("vgi_vision.ray needs Ray Data: pip install 'vgi-vision[ray]'") from exc


def actor_cpus() -> int:
    """The CPUs Ray reserved for the calling actor or task (at least 1)."""
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, round(assigned))


def in_actor(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the actor's CPU count as the model's threads, for in-process mode."""
    if options.get("location") is None and options.get("threads") is None:
        return {**options, "threads": actor_cpus()}
    return options


def as_table(batch: Any) -> pa.Table:
    """A batch in any of ``map_batches``' formats (pyarrow, numpy, pandas) as Arrow."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({name: pa.array(list(values)) for name, values in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)


class VisionBatch:
    """A catalog function over each batch: ``function``, ``image_column`` and the options
    and parameters of :class:`~vgi_vision.batch.BatchFunction`, as constructor kwargs."""

    def __init__(self, function: str, image_column: str = "image", **options: Any) -> None:
        self.core = BatchFunction(function, image_column, **in_actor(options))

    def __call__(self, batch: Any) -> pa.Table:
        return self.core(as_table(batch))


class VisionSQL:
    """A DuckDB query over each batch (the table ``batch``) with ``vision.*`` attached.

    ``sql`` must be row-local (each output row from rows of one batch): Ray cuts the data set
    into batches as it likes. Options are those of :class:`~vgi_vision.batch.BatchSQL`.
    """

    def __init__(self, sql: str, **options: Any) -> None:
        self.core = BatchSQL(sql, **in_actor(options))

    def __call__(self, batch: Any) -> pa.Table:
        return self.core(as_table(batch))

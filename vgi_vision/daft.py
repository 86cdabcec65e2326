"""vgi-vision functions as Daft class UDFs (``pip install 'vgi-vision[daft]'``).

Daft schedules, batches and retries (locally, or on Ray with the Ray runner); a function
made here only follows its conventions for ``@daft.cls`` batch methods::

    import daft
    from daft.functions import download
    from vgi_vision.daft import udf

    top_label = udf("top_label")
    classify = udf("classify", top_k=3)
    df = daft.from_pydict({"path": paths}).with_column("bytes", download(daft.col("path")))
    df = df.with_column("label", top_label(df["bytes"]))
    df = df.with_column("classes", classify(df["bytes"])).explode("classes")

    daft.attach_function(top_label, alias="top_label")
    daft.sql("SELECT path, top_label(bytes) AS label FROM df")

A scalar function's result is its SQL type; a table function's is a list of its rows (a
struct each) per image, which ``explode`` turns into rows. Each instance runs the model
itself with ``cpus`` onnxruntime threads (default 1), or calls running workers with
``location=``. Options and parameters are those of :class:`~vgi_vision.batch.BatchFunction`.

Daft pins pyarrow below 26 (daft 0.7.26), so this extra installs an older pyarrow than the
base package would.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from vgi_vision.batch import BatchFunction

try:
    import daft
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("vgi_vision.daft needs Daft: pip install 'vgi-vision[daft]'") from exc

#: The one argument column a Daft batch method hands over, as the core sees it.
IMAGES = "image"


def udf(function: str, *, cpus: float = 1, batch_size: int | None = None,
        max_concurrency: int | None = None, **options: Any) -> Any:
    """``function`` as a Daft class UDF instance: call it on an image expression.

    ``cpus``: CPUs per instance (its onnxruntime threads in-process); ``batch_size``: rows
    per call; ``max_concurrency``: instances at once. The return type is read from the
    catalog here, once (in-process, that builds a worker without running the model).
    """
    if "location" not in options and "threads" not in options:
        options["threads"] = max(1, round(cpus))
    probe = BatchFunction(function, IMAGES, **options)
    try:
        spec, columns = probe.spec(), probe.result_schema()
    finally:
        probe.close()
    if spec["kind"] == "scalar":
        return_dtype = daft.DataType.from_arrow_type(columns.field(0).type)
        result = columns.names[0]
    else:
        return_dtype = daft.DataType.list(
            daft.DataType.from_arrow_type(pa.struct(list(columns))))
        result = ""

    @daft.cls(cpus=cpus, max_concurrency=max_concurrency, name_override=f"vision.{function}")
    class VisionFunction:
        def __init__(self) -> None:
            self.core = BatchFunction(function, IMAGES, **options)

        @daft.method.batch(return_dtype=return_dtype, batch_size=batch_size)
        def __call__(self, images: daft.Series) -> pa.Array:
            table = pa.table({IMAGES: images.to_arrow()})
            if result:
                return self.core(table).column(result).combine_chunks()
            return self.core.rows_per_image(table)

    return VisionFunction()

"""``predictions()``: every prediction stored by write-back, one row per image and rank,
paged from one pinned table version (:mod:`vgi_vision.worker.calls.paging`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.paging import StoredPages
from vgi_vision.worker.lance.kinds import CLASSIFICATION
from vgi_vision.worker.registry import FunctionSpec, Overload
from vgi_vision.worker.stored import PREDICTION_COLUMNS


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="predictions",
        kind="table",
        overloads=(Overload(()),),
        columns=PREDICTION_COLUMNS,
        description="Every prediction stored by write-back (a worker started with --lance), "
                    "one row per image and rank; each image is stored once per model (with "
                    "the most ranks it was classified with), and only completed runs are "
                    "visible.",
        example="SELECT label, count(*) FROM vision.predictions() WHERE rank = 1 GROUP BY label",
        impl=Predictions(ctx),
        input_rows_per_call=1,
    )


class Predictions(StoredPages):
    """``predictions()``: every stored image's ranked classes, one output row per rank."""

    kind = CLASSIFICATION

    def widths(self, images: pa.Table) -> np.ndarray:
        return images.column("top_k").to_numpy(zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        return prediction_rows(images, row)


def prediction_rows(images: pa.Table, row: int) -> pa.RecordBatch:
    """One row per stored image and rank (the image's list columns unnested), for ``row``."""
    images = images.combine_chunks()
    column = {name: images.column(name).chunk(0) for name in images.column_names}
    parents = pc.list_parent_indices(column["idx"])
    widths = column["top_k"].to_numpy(zero_copy_only=False)
    starts = np.repeat(np.cumsum(widths) - widths, widths)
    unnested = {name: column[name].take(parents)
                for name in ("image_key", "path", "paths", "model", "run_id", "created_at")}
    unnested |= {name: pc.list_flatten(column[name]) for name in ("idx", "label", "confidence")}
    unnested["rank"] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
    return pa.RecordBatch.from_arrays(
        [pa.array(np.full(len(starts), row), pa.int32())]
        + [unnested[c.name] for c in PREDICTION_COLUMNS],
        names=[INPUT_ROW] + [c.name for c in PREDICTION_COLUMNS])

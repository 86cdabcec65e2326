"""``stored_objects()``: every detection stored by write-back, one row per image, detector
and object."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.paging import StoredPages
from vgi_vision.worker.lance.kinds import DETECTION
from vgi_vision.worker.registry import FunctionSpec, Overload
from vgi_vision.worker.stored import STORED_OBJECT_COLUMNS


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="stored_objects",
        kind="table",
        overloads=(Overload(()),),
        columns=STORED_OBJECT_COLUMNS,
        description="Every object and face stored by detection write-back (a worker started "
                    "with --lance), one row per image, detector and detection; each image is "
                    "stored once per detector (searched with the lowest min_score it was), "
                    "and only completed runs are visible.",
        example="SELECT label, count(DISTINCT image_key) AS images FROM "
                "vision.stored_objects() GROUP BY label",
        impl=StoredObjects(ctx),
        input_rows_per_call=1,
    )


class StoredObjects(StoredPages):
    """``stored_objects()``: every stored image's detections, one output row per detection,
    paged from one pinned table version like ``predictions()``."""

    kind = DETECTION

    def widths(self, images: pa.Table) -> np.ndarray:
        return pc.list_value_length(images.column("label")).to_numpy(zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        images = images.combine_chunks()
        column = {name: images.column(name).chunk(0) for name in images.column_names}
        parents = pc.list_parent_indices(column["label"])
        widths = self.widths(images)
        starts = np.repeat(np.cumsum(widths) - widths, widths)
        unnested = {name: column[name].take(parents) for name in
                    ("image_key", "path", "model", "width", "height", "min_score", "run_id",
                     "created_at")}
        unnested |= {name: pc.list_flatten(column[name])
                     for name in ("label", "score", "x0", "y0", "x1", "y1")}
        unnested["object"] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
        return pa.RecordBatch.from_arrays(
            [pa.array(np.full(len(starts), row), pa.int32())]
            + [unnested[c.name] for c in STORED_OBJECT_COLUMNS],
            names=[INPUT_ROW] + [c.name for c in STORED_OBJECT_COLUMNS])

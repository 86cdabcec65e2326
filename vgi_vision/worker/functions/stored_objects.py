"""``stored_objects()``: every detection stored by write-back, one row per image, detector
and object."""

from __future__ import annotations

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.paging import StoredItems
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


class StoredObjects(StoredItems):
    """``stored_objects()``: every stored image's detections, one output row per detection,
    paged from one pinned table version like ``predictions()``."""

    kind = DETECTION
    columns = STORED_OBJECT_COLUMNS
    per_image = ("image_key", "path", "model", "width", "height", "min_score", "run_id",
                 "created_at")
    per_item = ("label", "score", "x0", "y0", "x1", "y1")
    number = "object"

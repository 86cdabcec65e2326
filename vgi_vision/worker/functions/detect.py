"""``detect(image[, min_score])``: the objects in images, one row per object, best first."""

from __future__ import annotations

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.detecting import (
    MIN_SCORE_PARAM,
    ROWS_PER_CALL,
    DetectionScan,
)
from vgi_vision.worker.registry import FunctionSpec
from vgi_vision.worker.stored import OBJECT_COLUMNS


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="detect",
        kind="table",
        overloads=image_overloads(MIN_SCORE_PARAM),
        columns=OBJECT_COLUMNS,
        description="Find the objects in images (SSD MobileNet v2, COCO's 80 classes, "
                    "offline): one row per object, best first, with its label, score and box "
                    "in pixels of the image as displayed. At most 100 objects an image, none "
                    "scored below 0.3 (the model's own floor, whatever min_score). NULL or "
                    "undecodable images give no rows.",
        example="SELECT object, label, round(score, 2) AS score FROM "
                "vision.detect('test/sql/data/coffee.png')",
        impl=DetectionScan(ctx, ctx.objects, OBJECT_COLUMNS),
        input_rows_per_call=ROWS_PER_CALL,
    )

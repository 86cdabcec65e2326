"""``faces(image[, min_score])``: the faces in images, one row per face, best first."""

from __future__ import annotations

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.detecting import (
    MIN_SCORE_PARAM,
    ROWS_PER_CALL,
    DetectionScan,
)
from vgi_vision.worker.registry import FunctionSpec
from vgi_vision.worker.stored import FACE_COLUMNS


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="faces",
        kind="table",
        overloads=image_overloads(MIN_SCORE_PARAM),
        columns=FACE_COLUMNS,
        description="Find the faces in images (MediaPipe BlazeFace short- and full-range, "
                    "merged; offline): one row per face, best first, with its score and box "
                    "in pixels of the image as displayed. NULL or undecodable images give no "
                    "rows.",
        example="SELECT face, round(score, 2) AS score, x0, y0, x1, y1 FROM "
                "vision.faces('test/sql/data/grace_hopper.jpg')",
        impl=DetectionScan(ctx, ctx.faces, FACE_COLUMNS),
        input_rows_per_call=ROWS_PER_CALL,
    )

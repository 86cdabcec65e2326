"""``count_faces(image[, min_score])``: how many faces an image shows."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.detecting import MIN_SCORE_PARAM, ROWS_PER_CALL, counted
from vgi_vision.worker.registry import Args, Column, FunctionSpec


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="count_faces",
        kind="scalar",
        overloads=image_overloads(MIN_SCORE_PARAM),
        columns=(Column("count_faces", "INTEGER", "faces found (0 if none); NULL if the "
                                                  "image cannot be decoded"),),
        description="How many faces an image shows, as faces() finds them.",
        example="SELECT vision.count_faces('test/sql/data/grace_hopper.jpg')",
        impl=count_faces(ctx),
        input_rows_per_call=ROWS_PER_CALL,
    )


def count_faces(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    def call(args: Args) -> pa.Array:
        return counted(ctx, args, ctx.faces(), lambda faces, row: len(faces))

    return call

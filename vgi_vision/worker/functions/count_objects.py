"""``count_objects(image, label[, min_score])``: how many objects of one class an image shows."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.detecting import (
    MIN_SCORE_PARAM,
    ROWS_PER_CALL,
    check_labels,
    counted,
)
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Param


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="count_objects",
        kind="scalar",
        overloads=image_overloads(Param("label", "VARCHAR",
                                        doc="one of the detector's labels, e.g. 'person' "
                                            "(SELECT label FROM vision.detect(...) shows them "
                                            "found; an unknown one is an error naming the "
                                            "closest)"),
                                  MIN_SCORE_PARAM),
        columns=(Column("count_objects", "INTEGER", "objects of that label found (0 if "
                                                    "none); NULL if the image cannot be "
                                                    "decoded"),),
        description="How many objects of one class an image shows, as detect() finds them: "
                    "count_objects(image, 'person') counts people.",
        example="SELECT vision.count_objects('test/sql/data/coffee.png', 'cup')",
        impl=count_objects(ctx),
        input_rows_per_call=ROWS_PER_CALL,
    )


def count_objects(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    def call(args: Args) -> pa.Array:
        labels = args["label"].to_pylist()
        detector = ctx.objects()
        check_labels(labels, detector.labels, detector.info.name)
        return counted(ctx, args, detector,
                       lambda objects, row: None if labels[row] is None else
                       sum(o.label == labels[row] for o in objects))

    return call

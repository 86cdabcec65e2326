"""``is_a(image, category[, threshold])``: whether an image shows any kind of a category."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.taxonomy import CATEGORY_PARAM, category_scores
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Param

DEFAULT_THRESHOLD = 0.5


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="is_a",
        kind="scalar",
        overloads=image_overloads(CATEGORY_PARAM,
                                  Param("threshold", "DOUBLE", DEFAULT_THRESHOLD,
                                        "smallest category_score that counts",
                                        min=0.0, max=1.0)),
        columns=(Column("is_a", "BOOLEAN", "category_score >= threshold; NULL if the image "
                                           "cannot be decoded"),),
        description="Whether an image shows any kind of a category: category_score(image, "
                    "category) >= threshold. Names resolve as for category_score.",
        example="SELECT vision.is_a('test/sql/data/coffee.png', 'beverage', threshold := 0.8)",
        impl=is_a(ctx),
        input_rows_per_call=256,
    )


def is_a(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    def call(args: Args) -> pa.Array:
        thresholds = args["threshold"].to_pylist()
        scores = category_scores(ctx, args)
        return pa.array([None if s is None or t is None else s >= t
                         for s, t in zip(scores, thresholds, strict=True)], pa.bool_())

    return call

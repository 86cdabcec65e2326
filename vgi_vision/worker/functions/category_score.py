"""``category_score(image, category)``: how likely an image shows any kind of a category."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.taxonomy import CATEGORY_PARAM, category_scores
from vgi_vision.worker.registry import Args, Column, FunctionSpec


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="category_score",
        kind="scalar",
        overloads=image_overloads(CATEGORY_PARAM),
        columns=(Column("score", "DOUBLE", "probability in [0, 1] that the image shows any "
                                           "class under the category; NULL if undecodable"),),
        description="How likely an image shows any kind of a category: the sum of the "
                    "softmax over every class under it. A word resolves among the categories' "
                    "lemmas, preferring the category whose first lemma it is ('cat' is the "
                    "true cat, not the big cat); an unknown or ambiguous name is an error "
                    "listing the candidates.",
        example="SELECT vision.category_score('test/sql/data/cat.png', 'cat')",
        impl=category_score(ctx),
        input_rows_per_call=256,
    )


def category_score(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    def call(args: Args) -> pa.Array:
        return pa.array(category_scores(ctx, args), pa.float64())

    return call

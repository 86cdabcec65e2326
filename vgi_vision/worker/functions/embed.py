"""``embed(image)``: the model's L2-normalized image embedding, the vector write-back stores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads, image_sources
from vgi_vision.worker.registry import Args, Column, FunctionSpec
from vgi_vision.worker.stored import embedding_type


def spec(ctx: VisionContext) -> FunctionSpec | None:
    """None for a model without an embedding output: it has no ``embed``."""
    dim = ctx.classifier.info.embedding_dim
    if not dim:
        return None
    return FunctionSpec(
        name="embed",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("embedding", embedding_type(dim),
                        "unit-length (L2-normalized) image embedding of the model, the vector "
                        "write-back stores; NULL if the image cannot be decoded"),),
        description="The model's embedding of an image: a fixed-size FLOAT array of unit "
                    "length, so array_cosine_similarity and array_distance compare images. "
                    "NULL when the image is NULL or cannot be decoded.",
        example="SELECT a.filename, b.filename, array_cosine_similarity("
                "vision.embed(a.content), vision.embed(b.content)) AS similarity "
                "FROM read_blob('test/sql/data/*') a, "
                "read_blob('test/sql/data/*') b WHERE a.filename < b.filename "
                "ORDER BY similarity DESC LIMIT 3",
        impl=embed(ctx),
        input_rows_per_call=256,
    )


def embed(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """One ``classify`` pass over the whole call: decoding and model runs are batched exactly
    as for ``top_label``."""
    dim = ctx.classifier.info.embedding_dim

    def call(args: Args) -> pa.Array:
        results = ctx.classifier.classify(image_sources(ctx, args, range(args.num_rows)),
                                          top_k=1)
        vectors = np.zeros((len(results), dim), np.float32)  # zeros under the NULL rows
        for row, result in enumerate(results):
            if result is not None:
                vectors[row] = result.embedding
        missing = pa.array([r is None for r in results], pa.bool_())
        return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim, mask=missing)

    return call

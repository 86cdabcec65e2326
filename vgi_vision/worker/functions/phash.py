"""``phash(image)``: a 64-bit perceptual hash, for finding near-duplicate pictures."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads, image_sources
from vgi_vision.worker.registry import Args, Column, FunctionSpec
from vgi_vision.worker.vision.facts import perceptual_hash


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="phash",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("hash", "UBIGINT",
                        "64-bit DCT perceptual hash (imagehash phash) of the upright image; "
                        "NULL if the image cannot be decoded"),),
        description="A 64-bit perceptual hash: re-encoded, resized or slightly cropped copies "
                    "of a picture differ in few bits, so bit_count(xor(a, b)) <= 6 finds "
                    "near-duplicates.",
        example="SELECT bit_count(xor(vision.phash('test/sql/data/cat.png'), "
                "vision.phash('test/sql/data/coffee.png')))",
        impl=phash(ctx),
        input_rows_per_call=256,
    )


def phash(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """NULL where the image cannot be decoded."""

    def call(args: Args) -> pa.Array:
        sources = image_sources(ctx, args, range(args.num_rows))
        return pa.array([perceptual_hash(s, ctx.classifier.limits) for s in sources],
                        pa.uint64())

    return call

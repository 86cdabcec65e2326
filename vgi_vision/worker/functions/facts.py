"""Per-image facts as scalar functions: ``embed``, ``image_info`` and ``phash``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from vgi_vision.protocol.sqltypes import arrow_type
from vgi_vision.worker.functions.common import VisionContext, image_overloads, image_sources
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Registry
from vgi_vision.worker.vision.facts import ImageInfo, perceptual_hash, read_info

IMAGE_INFO_TYPE = ("STRUCT(format VARCHAR, width INTEGER, height INTEGER, mode VARCHAR, "
                   "frames INTEGER, orientation INTEGER, taken_at TIMESTAMP, make VARCHAR, "
                   "model VARCHAR, latitude DOUBLE, longitude DOUBLE)")


def embedding_type(ctx: VisionContext) -> str:
    return f"FLOAT[{ctx.classifier.info.embedding_dim}]"


def embed(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """``embed(image)``: the L2-normalized embedding write-back stores, NULL if undecodable.

    One ``classify`` pass over the whole call: decoding and model runs are batched exactly as
    for ``top_label``.
    """
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


def image_info(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """``image_info(image)``: header facts and EXIF; NULL if the bytes are no image."""
    wanted = arrow_type(IMAGE_INFO_TYPE)

    def call(args: Args) -> pa.Array:
        infos: list[ImageInfo | None] = [
            read_info(source, ctx.classifier.limits)
            for source in image_sources(ctx, args, range(args.num_rows))]
        return pa.array([None if i is None else i.as_dict() for i in infos], wanted)

    return call


def phash(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """``phash(image)``: the 64-bit perceptual hash, NULL if undecodable."""

    def call(args: Args) -> pa.Array:
        sources = image_sources(ctx, args, range(args.num_rows))
        return pa.array([perceptual_hash(s, ctx.classifier.limits) for s in sources],
                        pa.uint64())

    return call


def register(registry: Registry, ctx: VisionContext) -> None:
    """Declare ``embed``, ``image_info`` and ``phash`` on ``registry``."""
    if ctx.classifier.info.embedding_dim:  # a model without an embedding output has no embed
        registry.add(FunctionSpec(
            name="embed",
            kind="scalar",
            overloads=image_overloads(),
            columns=(Column("embedding", embedding_type(ctx),
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
        ))
    registry.add(FunctionSpec(
        name="image_info",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("info", IMAGE_INFO_TYPE,
                        "format (JPEG, PNG, ...), width and height in stored pixels, Pillow "
                        "mode, frames; from EXIF when present: orientation 1..8, taken_at "
                        "(camera local time), make, model, GPS latitude and longitude in "
                        "degrees (south and west negative); a field is NULL when absent or "
                        "malformed"),),
        description="What an image's headers say, without decoding its pixels. NULL when "
                    "the image is NULL or not an image.",
        example="SELECT vision.image_info('test/sql/data/rocket.jpg').width",
        impl=image_info(ctx),
        input_rows_per_call=256,
    ))
    registry.add(FunctionSpec(
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
    ))

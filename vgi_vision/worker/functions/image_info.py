"""``image_info(image)``: what an image's headers and EXIF say, without decoding its pixels."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from vgi_vision.protocol.sqltypes import arrow_type
from vgi_vision.worker.calls.context import VisionContext, image_overloads, image_sources
from vgi_vision.worker.registry import Args, Column, FunctionSpec
from vgi_vision.worker.vision.facts import ImageInfo, read_info

IMAGE_INFO_TYPE = ("STRUCT(format VARCHAR, width INTEGER, height INTEGER, mode VARCHAR, "
                   "frames INTEGER, orientation INTEGER, taken_at TIMESTAMP, make VARCHAR, "
                   "model VARCHAR, latitude DOUBLE, longitude DOUBLE)")


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
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
    )


def image_info(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    wanted = arrow_type(IMAGE_INFO_TYPE)

    def call(args: Args) -> pa.Array:
        infos: list[ImageInfo | None] = [
            read_info(source, ctx.classifier.limits)
            for source in image_sources(ctx, args, range(args.num_rows))]
        return pa.array([None if i is None else i.as_dict() for i in infos], wanted)

    return call

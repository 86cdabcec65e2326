"""``top_label(image)``: the single most likely label, NULL where there is no prediction."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads, image_sources
from vgi_vision.worker.calls.runs import RunState, finish_run, rolled_back_on_error, write_back
from vgi_vision.worker.registry import Args, Column, FunctionSpec


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="top_label",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("label", "VARCHAR", "the most likely class, NULL if no prediction"),),
        description="The most likely class label of an image (serving model); NULL when "
                    "the image is NULL or cannot be decoded.",
        example="SELECT vision.top_label('test/sql/data/coffee.png')",
        impl=top_label(ctx),
        input_rows_per_call=256,
    )


def top_label(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """With write-back on, each call stores its top-1 predictions as one run."""

    def call(args: Args) -> pa.Array:
        rows = range(args.num_rows)
        sources = image_sources(ctx, args, rows)
        results = ctx.classifier.classify(sources, top_k=1, thumbnails=ctx.sink is not None)
        if ctx.sink is not None:
            state = RunState(run_id=uuid.uuid4().hex)
            with rolled_back_on_error(ctx, state):
                write_back(ctx, state, args, rows, sources, results, [1] * len(rows))
                finish_run(ctx, state)
        labels = ctx.classifier.info.labels
        return pa.array([None if r is None else labels[int(r.indices[0])] for r in results],
                        pa.string())

    return call

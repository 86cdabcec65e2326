"""``ocr_text(image[, min_confidence])``: all the text in an image as one string."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pyarrow as pa

from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.runs import RunState, finish_run, rolled_back_on_error
from vgi_vision.worker.calls.text_reading import (
    MIN_CONFIDENCE_PARAM,
    OCR_BOUNDS,
    OCR_ROWS_PER_CALL,
    read_and_stage,
)
from vgi_vision.worker.lance.kinds import TEXT
from vgi_vision.worker.registry import Args, Column, FunctionSpec


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="ocr_text",
        kind="scalar",
        overloads=image_overloads(MIN_CONFIDENCE_PARAM),
        columns=(Column("text", "VARCHAR", "the lines in reading order, joined by newlines; "
                                           "NULL when no text is found"),),
        description="All the text in an image as one string, lines in reading order joined "
                    f"by newlines; NULL when there is none. {OCR_BOUNDS} Needs "
                    "vgi-vision[ocr].",
        example="SELECT vision.ocr_text('test/sql/text/invoice.png')",
        impl=ocr_text(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    )


def ocr_text(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """The lines joined by newlines, NULL if none. With write-back on, each call stores what
    it read as one run."""

    def call(args: Args) -> pa.Array:
        rows = range(args.num_rows)
        state = RunState(run_id=uuid.uuid4().hex if ctx.sink else "")
        with rolled_back_on_error(ctx, state):
            results = read_and_stage(ctx, state, args, rows)
            finish_run(ctx, state, TEXT)
        return pa.array(["\n".join(line.text for line in lines) if lines else None
                         for lines in results], pa.string())

    return call

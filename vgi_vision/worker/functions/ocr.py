"""``ocr(image[, min_confidence])``: the text in images, one row per line in reading order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.item_pages import ItemPages, PendingState
from vgi_vision.worker.calls.text_reading import (
    MIN_CONFIDENCE_PARAM,
    OCR_BOUNDS,
    OCR_ROWS_PER_CALL,
    read_and_stage,
)
from vgi_vision.worker.lance.kinds import TEXT
from vgi_vision.worker.registry import Args, FunctionSpec
from vgi_vision.worker.stored import OCR_COLUMNS
from vgi_vision.worker.vision.ocr import TextLine

#: Images read per tick: OCR takes ~0.1-1 s an image, so a tick stays short.
OCR_IMAGES_PER_TICK = 4


@dataclass
class OcrState(PendingState):
    """The paging state of ``ocr`` (:mod:`vgi_vision.worker.calls.item_pages`)."""

    kind: ClassVar[str] = "ocr"


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="ocr",
        kind="table",
        overloads=image_overloads(MIN_CONFIDENCE_PARAM),
        columns=OCR_COLUMNS,
        description="Read the text in images (PP-OCR models, offline): one row per line in "
                    "reading order, with its confidence and box in pixels of the upright "
                    "image. NULL, undecodable or textless images give no rows. "
                    f"{OCR_BOUNDS} Needs vgi-vision[ocr].",
        example="SELECT line, text FROM vision.ocr('test/sql/text/invoice.png')",
        impl=Ocr(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    )


def line_batch(rows: range, results: list[list[TextLine] | None]) -> pa.RecordBatch:
    """Rows (input_row, line, text, confidence, x0, y0, x1, y1) for every line read."""
    tagged = [(row, number, line)
              for row, lines in zip(rows, results, strict=True) if lines
              for number, line in enumerate(lines, start=1)]
    return pa.RecordBatch.from_arrays(
        [pa.array([row for row, _, _ in tagged], pa.int32()),
         pa.array([n for _, n, _ in tagged], pa.int32()),
         pa.array([ln.text for _, _, ln in tagged], pa.string()),
         pa.array([ln.confidence for _, _, ln in tagged], pa.float64()),
         *(pa.array([getattr(ln, edge) for _, _, ln in tagged], pa.int32())
           for edge in ("x0", "y0", "x1", "y1"))],
        names=[INPUT_ROW] + [c.name for c in OCR_COLUMNS])


class Ocr(ItemPages):
    """One row per line of text, in reading order, paged across ticks
    (:mod:`vgi_vision.worker.calls.item_pages`). A NULL or undecodable image, or a NULL
    min_confidence, gives no rows for that argument row.
    """

    state_type = OcrState
    kind = TEXT
    images_per_tick = OCR_IMAGES_PER_TICK

    def read(self, args: Args, state: PendingState, rows: range) -> pa.RecordBatch:
        return line_batch(rows, read_and_stage(self.ctx, state, args, rows))

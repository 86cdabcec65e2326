"""``stored_text()``: every text line stored by OCR write-back, one row per image and line."""

from __future__ import annotations

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.paging import StoredItems
from vgi_vision.worker.lance.kinds import TEXT
from vgi_vision.worker.registry import FunctionSpec, Overload
from vgi_vision.worker.stored import STORED_TEXT_COLUMNS


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="stored_text",
        kind="table",
        overloads=(Overload(()),),
        columns=STORED_TEXT_COLUMNS,
        description="Every text line stored by OCR write-back (a worker started with --lance), "
                    "one row per image and line; only completed runs are visible.",
        example="SELECT path, line, text FROM vision.stored_text() WHERE text ILIKE '%total%'",
        impl=StoredText(ctx),
        input_rows_per_call=1,
    )


class StoredText(StoredItems):
    """``stored_text()``: every line stored by OCR write-back, one row per image and line,
    paged from one pinned table version like ``predictions()``."""

    kind = TEXT
    columns = STORED_TEXT_COLUMNS
    per_image = ("image_key", "path", "model", "min_confidence", "run_id", "created_at")
    per_item = ("text", "confidence", "x0", "y0", "x1", "y1")
    number = "line"

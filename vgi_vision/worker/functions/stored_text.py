"""``stored_text()``: every text line stored by OCR write-back, one row per image and line."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.paging import StoredPages
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


class StoredText(StoredPages):
    """``stored_text()``: every line stored by OCR write-back, one row per image and line,
    paged from one pinned table version like ``predictions()``."""

    kind = TEXT

    def widths(self, images: pa.Table) -> np.ndarray:
        return pc.list_value_length(images.column("text")).to_numpy(zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        images = images.combine_chunks()
        column = {name: images.column(name).chunk(0) for name in images.column_names}
        parents = pc.list_parent_indices(column["text"])
        widths = self.widths(images)
        starts = np.repeat(np.cumsum(widths) - widths, widths)
        unnested = {name: column[name].take(parents) for name in
                    ("image_key", "path", "model", "min_confidence", "run_id", "created_at")}
        unnested |= {name: pc.list_flatten(column[name])
                     for name in ("text", "confidence", "x0", "y0", "x1", "y1")}
        unnested["line"] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
        return pa.RecordBatch.from_arrays(
            [pa.array(np.full(len(starts), row), pa.int32())]
            + [unnested[c.name] for c in STORED_TEXT_COLUMNS],
            names=[INPUT_ROW] + [c.name for c in STORED_TEXT_COLUMNS])

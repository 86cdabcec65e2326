"""``predictions()``: every prediction stored by write-back, one row per image and rank,
paged from one pinned table version (``stored_text()`` pages the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.functions.common import VisionContext
from vgi_vision.worker.lance.kinds import CLASSIFICATION, ResultKind
from vgi_vision.worker.registry import Args, FunctionSpec, Output, Overload
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.stored import PREDICTION_COLUMNS

#: Stored prediction rows per ``predictions()`` tick.
PAGE_ROWS = 512


@dataclass
class PageState(CursorState):
    """A cursor over stored rows of one pinned table version, per argument row."""

    kind: ClassVar[str] = "page"
    version: int = 0
    row: int = 0


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="predictions",
        kind="table",
        overloads=(Overload(()),),
        columns=PREDICTION_COLUMNS,
        description="Every prediction stored by write-back (a worker started with --lance), "
                    "one row per image and rank; each image is stored once per model (with "
                    "the most ranks it was classified with), and only completed runs are "
                    "visible.",
        example="SELECT label, count(*) FROM vision.predictions() WHERE rank = 1 GROUP BY label",
        impl=Predictions(ctx),
        input_rows_per_call=1,
    )


class Predictions:
    """``predictions()``: every stored image's ranked classes, paged from one pinned version.

    A page is up to ``PAGE_ROWS`` prediction rows made of whole images (at least one image,
    so an image stored with more ranks than a page still comes back in one response).
    Subclasses page through other stored results the same way (``stored_text``).
    """

    state_type = PageState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    #: The stored results this function pages through.
    kind: ResultKind = CLASSIFICATION

    def initial_state(self, args: Args) -> PageState:
        return PageState(version=self.ctx.store().version(self.kind))

    def process(self, args: Args, state: PageState, out: Output) -> None:
        if state.row >= args.num_rows:
            out.finish()
            return
        read = self.ctx.store().page(state.version, state.offset, PAGE_ROWS, self.kind)
        widths = self.widths(read)
        fitting = int(np.searchsorted(np.cumsum(widths), PAGE_ROWS, side="right"))
        page = read.slice(0, max(1, fitting))
        row = state.row
        state.offset += page.num_rows
        if page.num_rows == read.num_rows < PAGE_ROWS:  # the last stored image was read
            state.row, state.offset = state.row + 1, 0
        batch = self.rows(page, row) if page.num_rows else None
        if batch is not None and batch.num_rows:
            out.emit(batch)
        if state.row >= args.num_rows:
            out.finish()

    def widths(self, images: pa.Table) -> np.ndarray:
        """Output rows each stored image makes."""
        return images.column("top_k").to_numpy(zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        return prediction_rows(images, row)


def prediction_rows(images: pa.Table, row: int) -> pa.RecordBatch:
    """One row per stored image and rank (the image's list columns unnested), for ``row``."""
    images = images.combine_chunks()
    column = {name: images.column(name).chunk(0) for name in images.column_names}
    parents = pc.list_parent_indices(column["idx"])
    widths = column["top_k"].to_numpy(zero_copy_only=False)
    starts = np.repeat(np.cumsum(widths) - widths, widths)
    unnested = {name: column[name].take(parents)
                for name in ("image_key", "path", "model", "run_id", "created_at")}
    unnested |= {name: pc.list_flatten(column[name]) for name in ("idx", "label", "confidence")}
    unnested["rank"] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
    return pa.RecordBatch.from_arrays(
        [pa.array(np.full(len(starts), row), pa.int32())]
        + [unnested[c.name] for c in PREDICTION_COLUMNS],
        names=[INPUT_ROW] + [c.name for c in PREDICTION_COLUMNS])

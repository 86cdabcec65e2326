"""Paging stored results from one pinned table version, shared by ``predictions()``,
``stored_text()`` and ``stored_objects()``: each stored image unnests into several output rows
(its ranks, its text lines or its detections), so a page is counted in output rows but always
cut between whole images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.lance.kinds import ResultKind
from vgi_vision.worker.registry import Args, Column, Output
from vgi_vision.worker.state import CursorState

#: Output rows per tick of a stored-results scan.
PAGE_ROWS = 512


@dataclass
class PageState(CursorState):
    """A cursor over stored rows of one pinned table version, per argument row."""

    kind: ClassVar[str] = "page"
    version: int = 0
    row: int = 0


class StoredPages(ABC):
    """Every stored result of ``kind``, paged from the table version the scan started at.

    A page is up to ``PAGE_ROWS`` output rows made of whole images (at least one image, so an
    image with more rows than a page still comes back in one response). Paging a pinned
    version keeps the pages of one scan consistent while other runs commit. A subclass says
    which results (``kind``), how many output rows an image makes (``widths``) and what they
    are (``rows``).
    """

    state_type = PageState
    kind: ClassVar[ResultKind]

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

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

    @abstractmethod
    def widths(self, images: pa.Table) -> np.ndarray:
        """Output rows each stored image makes."""

    @abstractmethod
    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        """The output rows of ``images`` for argument row ``row``."""


class StoredItems(StoredPages):
    """Stored results that hold a list of items an image (text lines, detections), read back
    as one output row per item: the image's ``per_image`` values repeated, its
    ``per_item`` lists flattened (the first one counts the items) and the item's number
    1..n within its image as ``number``; ``columns`` orders them."""

    columns: ClassVar[tuple[Column, ...]]
    per_image: ClassVar[tuple[str, ...]]
    per_item: ClassVar[tuple[str, ...]]
    number: ClassVar[str]

    def widths(self, images: pa.Table) -> np.ndarray:
        return pc.list_value_length(images.column(self.per_item[0])).to_numpy(
            zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        images = images.combine_chunks()
        column = {name: images.column(name).chunk(0) for name in images.column_names}
        parents = pc.list_parent_indices(column[self.per_item[0]])
        widths = self.widths(images)
        starts = np.repeat(np.cumsum(widths) - widths, widths)
        unnested = {name: column[name].take(parents) for name in self.per_image}
        unnested |= {name: pc.list_flatten(column[name]) for name in self.per_item}
        unnested[self.number] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
        return pa.RecordBatch.from_arrays(
            [pa.array(np.full(len(starts), row), pa.int32())]
            + [unnested[c.name] for c in self.columns],
            names=[INPUT_ROW] + [c.name for c in self.columns])

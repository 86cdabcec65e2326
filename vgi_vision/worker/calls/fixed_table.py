"""A scan over a table fixed for the call, shared by ``categories()``, ``image_classes()``
and ``models()``: every argument row gets all of the table's rows, each output row is a pure
function of its position, so the scan state is one integer however many ticks it takes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.registry import ROWS_PER_TICK, Args, Output
from vgi_vision.worker.state import CursorState


class FixedTableScan(ABC):
    """The rows of a fixed table, repeated per argument row, ``ROWS_PER_TICK`` at a time.

    A subclass says how many rows the table has (``size``) and what the columns of some of
    them are (``columns``); the scan adds the input-row column and casts to the declared schema.
    """

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        size = self.size()
        total = size * args.num_rows
        rows = state.advance(total, ROWS_PER_TICK)
        if rows:
            positions = np.arange(rows.start, rows.stop)
            columns = {INPUT_ROW: positions // size, **self.columns(positions % size)}
            out.emit(pa.RecordBatch.from_pydict(columns, schema=out.schema))
        if state.offset >= total:
            out.finish()

    @abstractmethod
    def size(self) -> int:
        """How many rows the table has."""

    @abstractmethod
    def columns(self, entries: np.ndarray) -> Mapping[str, object]:
        """The declared columns (all but the input row) of the table rows ``entries``."""

"""``image_classes()``: the serving model's classes, with the WordNet categories above each."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.taxonomy import ancestor_columns, taxonomy_of
from vgi_vision.worker.registry import (
    ROWS_PER_TICK,
    Args,
    Column,
    FunctionSpec,
    Output,
    Overload,
)
from vgi_vision.worker.state import CursorState


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="image_classes",
        kind="table",
        overloads=(Overload(()),),
        columns=(Column("idx", "INTEGER", "class index, 0..classes-1"),
                 Column("label", "VARCHAR", "human-readable class name, unique"),
                 Column("wnid", "VARCHAR", "WordNet id"),
                 Column("ancestors", "VARCHAR[]",
                        "names of the WordNet categories above the class, nearest first; "
                        "NULL if the model ships no categories"),
                 Column("ancestor_wnids", "VARCHAR[]", "their WordNet ids, in the same order")),
        description="The classes the serving model predicts, by index (the 1000 ImageNet "
                    "classes for the shipped models), with the WordNet categories above each.",
        example="SELECT * FROM vision.image_classes() WHERE label LIKE '%cat%'",
        impl=ImageClasses(ctx),
        input_rows_per_call=1,
    )


class ImageClasses:
    """``image_classes()``: the serving model's classes, recomputed from a cursor.

    The result is a pure function of the position, so the state is one integer however many
    ticks the scan takes.
    """

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        info = self.ctx.classifier.info
        total = info.num_classes * args.num_rows
        rows = state.advance(total, ROWS_PER_TICK)
        positions = np.arange(rows.start, rows.stop)
        if len(positions):
            idx = positions % info.num_classes
            out.emit(pa.RecordBatch.from_arrays(
                [pa.array(positions // info.num_classes, pa.int32()),
                 pa.array(idx, pa.int32()),
                 pa.array([info.labels[i] for i in idx], pa.string()),
                 pa.array([info.wnids[i] for i in idx], pa.string()),
                 *ancestor_columns(taxonomy_of(self.ctx), idx.tolist())],
                names=[INPUT_ROW, "idx", "label", "wnid", "ancestors", "ancestor_wnids"]))
        if state.offset >= total:
            out.finish()

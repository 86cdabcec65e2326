"""``categories()``: every WordNet category above the model's classes."""

from __future__ import annotations

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.taxonomy import require_taxonomy
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
        name="categories",
        kind="table",
        overloads=(Overload(()),),
        columns=(Column("name", "VARCHAR", "the synset's first lemma; not unique: resolve "
                                           "by wnid when two share it"),
                 Column("wnid", "VARCHAR", "WordNet 3.0 id of the synset"),
                 Column("classes", "INTEGER", "how many of the model's classes are under it"),
                 Column("lemmas", "VARCHAR[]", "every word for it, first lemma first")),
        description="Every WordNet category above the model's classes (their hypernyms, "
                    "from WordNet 3.0), with the number of classes under each. Names and ids "
                    "here are what category_score and is_a accept.",
        example="SELECT * FROM vision.categories() WHERE name = 'dog'",
        impl=Categories(ctx),
        input_rows_per_call=1,
    )


class Categories:
    """``categories()``: every category above the model's classes, from a cursor."""

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        require_taxonomy(self.ctx)
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        categories = list(require_taxonomy(self.ctx).categories.values())
        total = len(categories) * args.num_rows
        rows = state.advance(total, ROWS_PER_TICK)
        if rows:
            chosen = [categories[p % len(categories)] for p in rows]
            out.emit(pa.RecordBatch.from_arrays(
                [pa.array([p // len(categories) for p in rows], pa.int32()),
                 pa.array([c.name for c in chosen], pa.string()),
                 pa.array([c.wnid for c in chosen], pa.string()),
                 pa.array([len(c.classes) for c in chosen], pa.int32()),
                 pa.array([[w.replace("_", " ") for w in c.lemmas] for c in chosen],
                          pa.list_(pa.string()))],
                names=[INPUT_ROW, "name", "wnid", "classes", "lemmas"]))
        if state.offset >= total:
            out.finish()

"""``categories()``: every WordNet category above the model's classes."""

from __future__ import annotations

import numpy as np

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.fixed_table import FixedTableScan
from vgi_vision.worker.calls.taxonomy import require_taxonomy
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Overload
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


class Categories(FixedTableScan):
    """``categories()``: every category above the model's classes, from a cursor."""

    def initial_state(self, args: Args) -> CursorState:
        require_taxonomy(self.ctx)
        return super().initial_state(args)

    def size(self) -> int:
        return len(require_taxonomy(self.ctx).categories)

    def columns(self, entries: np.ndarray) -> dict[str, object]:
        categories = list(require_taxonomy(self.ctx).categories.values())
        chosen = [categories[i] for i in entries]
        return {"name": [c.name for c in chosen],
                "wnid": [c.wnid for c in chosen],
                "classes": [len(c.classes) for c in chosen],
                "lemmas": [[w.replace("_", " ") for w in c.lemmas] for c in chosen]}

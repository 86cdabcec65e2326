"""``image_classes()``: the serving model's classes, with the WordNet categories above each."""

from __future__ import annotations

import numpy as np

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.fixed_table import FixedTableScan
from vgi_vision.worker.calls.taxonomy import ancestor_columns, taxonomy_of
from vgi_vision.worker.registry import Column, FunctionSpec, Overload


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


class ImageClasses(FixedTableScan):
    """``image_classes()``: the serving model's classes, recomputed from a cursor."""

    def size(self) -> int:
        return self.ctx.classifier.info.num_classes

    def columns(self, entries: np.ndarray) -> dict[str, object]:
        info = self.ctx.classifier.info
        ancestors, ancestor_wnids = ancestor_columns(taxonomy_of(self.ctx), entries.tolist())
        return {"idx": entries,
                "label": [info.labels[i] for i in entries],
                "wnid": [info.wnids[i] for i in entries],
                "ancestors": ancestors,
                "ancestor_wnids": ancestor_wnids}

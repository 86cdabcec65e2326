"""Classification: ``classify``, ``top_label`` and ``image_classes``."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.functions.categories import ancestor_columns, taxonomy_of
from vgi_vision.worker.functions.common import (
    VisionContext,
    image_sources,
    images_per_tick,
    top_k_column,
)
from vgi_vision.worker.functions.stored import (
    RunState,
    finish_run,
    rolled_back_on_error,
    write_back,
)
from vgi_vision.worker.registry import ROWS_PER_TICK, Args, Column, Output
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.model import Classification, Classifier

CLASSIFY_COLUMNS = (
    Column("rank", "INTEGER", "1 for the most likely class, then 2, 3, ..."),
    Column("idx", "INTEGER", "class index, 0..999 for the shipped ImageNet-1k models"),
    Column("label", "VARCHAR", "human-readable class name, unique across the model's classes"),
    Column("wnid", "VARCHAR", "WordNet id of the class, e.g. n07920052 (NULL if the model's "
                              "labels have none)"),
    Column("confidence", "DOUBLE", "softmax probability in [0, 1], descending by rank"),
)


class Classify:
    """``classify(image[, top_k])``: the top-k classes of every argument row.

    The cursor is the next argument row to classify; each tick classifies one model batch of
    rows and emits their predictions. A NULL or undecodable image, or a NULL top_k, yields no
    rows for that argument row. With write-back on, the call is one run: its rows become
    visible in LanceDB together when the scan finishes, or not at all.
    """

    state_type = RunState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> RunState:
        top_k_column(self.ctx, args)
        return RunState(run_id=uuid.uuid4().hex if self.ctx.sink else "")

    def process(self, args: Args, state: RunState, out: Output) -> None:
        with rolled_back_on_error(self.ctx, state):
            ks = top_k_column(self.ctx, args)
            rows = state.advance(args.num_rows, images_per_tick(ks))
            if rows:
                sources = image_sources(self.ctx, args, rows)
                wanted = [ks[r] for r in rows]
                sources = [s if k is not None else None
                           for s, k in zip(sources, wanted, strict=True)]
                results = self.ctx.classifier.classify(sources, max((k or 1) for k in wanted),
                                                       thumbnails=self.ctx.sink is not None)
                if self.ctx.sink is not None:
                    write_back(self.ctx, state, args, rows, sources, results, wanted)
                batch = prediction_batch(self.ctx.classifier, rows, results, wanted)
                if batch.num_rows:
                    out.emit(batch)
            if state.offset >= args.num_rows:
                finish_run(self.ctx, state)
                out.finish()


def prediction_batch(classifier: Classifier, rows: range,
                     results: list[Classification | None], ks: list[int | None]
                     ) -> pa.RecordBatch:
    """Rows (input_row, rank, idx, label, wnid, confidence) for each classified argument row."""
    input_rows: list[int] = []
    ranks: list[int] = []
    idxs: list[int] = []
    confidences: list[float] = []
    for row, result, k in zip(rows, results, ks, strict=True):
        if result is None or k is None:
            continue
        n = min(k, len(result.indices))
        input_rows.extend([row] * n)
        ranks.extend(range(1, n + 1))
        idxs.extend(result.indices[:n].tolist())
        confidences.extend(result.probabilities[:n].tolist())
    labels = classifier.info.labels
    wnids = classifier.info.wnids
    return pa.RecordBatch.from_arrays(
        [pa.array(input_rows, pa.int32()), pa.array(ranks, pa.int32()),
         pa.array(idxs, pa.int32()), pa.array([labels[i] for i in idxs], pa.string()),
         pa.array([wnids[i] for i in idxs], pa.string()),
         pa.array(confidences, pa.float64())],
        names=[INPUT_ROW] + [c.name for c in CLASSIFY_COLUMNS])


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


def top_label(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """``top_label(image)``: the single most likely label, NULL where there is no prediction.

    With write-back on, each call stores its top-1 predictions as one run.
    """

    def call(args: Args) -> pa.Array:
        rows = range(args.num_rows)
        sources = image_sources(ctx, args, rows)
        results = ctx.classifier.classify(sources, top_k=1, thumbnails=ctx.sink is not None)
        if ctx.sink is not None:
            state = RunState(run_id=uuid.uuid4().hex)
            with rolled_back_on_error(ctx, state):
                write_back(ctx, state, args, rows, sources, results, [1] * len(rows))
                finish_run(ctx, state)
        labels = ctx.classifier.info.labels
        return pa.array([None if r is None else labels[int(r.indices[0])] for r in results],
                        pa.string())

    return call

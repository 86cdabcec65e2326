"""``classify(image[, top_k])``: the top-k classes of each image, most likely first."""

from __future__ import annotations

import uuid

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.calls.context import (
    IMAGES_PER_TICK,
    VisionContext,
    image_overloads,
    image_sources,
    images_per_tick,
)
from vgi_vision.worker.calls.runs import RunState, finish_run, rolled_back_on_error, write_back
from vgi_vision.worker.registry import Args, FunctionSpec, Output, Param
from vgi_vision.worker.stored import CLASSIFY_COLUMNS
from vgi_vision.worker.vision.model import (
    DEFAULT_TOP_K,
    MIN_TOP_K,
    Classification,
    Classifier,
)


def top_k_param(ctx: VisionContext) -> Param:
    """``top_k``: 1..the serving model's class count."""
    return Param("top_k", "INTEGER", DEFAULT_TOP_K,
                 "how many classes per image, up to the model's class count",
                 min=MIN_TOP_K, max=ctx.classifier.info.num_classes)


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="classify",
        kind="table",
        overloads=image_overloads(top_k_param(ctx)),
        columns=CLASSIFY_COLUMNS,
        description="Classify images with the serving model (vision.models()): the top_k "
                    "most likely classes per image, most likely first. NULL or undecodable "
                    "images give no rows.",
        example="SELECT * FROM vision.classify('test/sql/data/coffee.png', top_k := 3)",
        impl=Classify(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    )


class Classify:
    """The cursor is the next argument row to classify; each tick classifies one model batch
    of rows and emits their predictions. A NULL or undecodable image, or a NULL top_k, yields
    no rows for that argument row. With write-back on, the call is one run: its rows become
    visible in LanceDB together when the scan finishes, or not at all.
    """

    state_type = RunState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> RunState:
        return RunState(run_id=uuid.uuid4().hex if self.ctx.sink else "")

    def process(self, args: Args, state: RunState, out: Output) -> None:
        with rolled_back_on_error(self.ctx, state):
            ks: list[int | None] = args["top_k"].to_pylist()
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

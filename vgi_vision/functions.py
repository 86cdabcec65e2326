"""The vision functions, declared on a registry: no transport code lives here.

``build_registry`` wires the functions to a classifier and a path policy (and, when write-back
is on, a prediction sink), so one worker process can serve them over any transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from vgi_vision.imaging import ImageSource
from vgi_vision.model import NUM_CLASSES, Classification, Classifier, validate_top_k, TopKError
from vgi_vision.paths import PathPolicy
from vgi_vision.registry import (INPUT_ROW, ROWS_PER_TICK, Args, Column, FunctionError,
                                 FunctionSpec, Output, Overload, Param, Registry)
from vgi_vision.state import CursorState

DEFAULT_TOP_K = 5
#: Images classified per tick: one model batch.
IMAGES_PER_TICK = 32
#: Upper bound on rows one classify tick emits (bounds a response when top_k is large).
MAX_ROWS_PER_TICK = 4096

CLASSIFY_COLUMNS = (
    Column("rank", "INTEGER", "1 for the most likely class, then 2, 3, ..."),
    Column("idx", "INTEGER", "ImageNet-1k class index, 0..999"),
    Column("label", "VARCHAR", "human-readable class name, unique across the 1000 classes"),
    Column("wnid", "VARCHAR", "WordNet id of the class, e.g. n07920052"),
    Column("confidence", "DOUBLE", "softmax probability in [0, 1], descending by rank"),
)


@dataclass(frozen=True)
class VisionContext:
    """What the vision functions need from the worker that hosts them."""

    classifier: Classifier
    paths: PathPolicy


def image_overloads(*extra: Param) -> tuple[Overload, ...]:
    """The same signature twice: image bytes (BLOB) or a path to read (VARCHAR)."""
    return (
        Overload((Param("image", "BLOB", doc="encoded image bytes (JPEG, PNG, WebP, ...)"),
                  *extra)),
        Overload((Param("path", "VARCHAR", doc="path of an image file"), *extra)),
    )


def image_sources(ctx: VisionContext, args: Args, rows: range) -> list[ImageSource]:
    """The images of ``rows``: bytes as given, paths checked against the path policy."""
    if args.overload.params[0].type == "BLOB":
        return args["image"].slice(rows.start, len(rows)).to_pylist()
    paths = args["path"].slice(rows.start, len(rows)).to_pylist()
    return [None if p is None else ctx.paths.resolve(p) for p in paths]


def top_k_column(args: Args) -> list[int | None]:
    """Per-row top_k, validated up front so a bad value fails the call before any work."""
    values = args["top_k"].to_pylist()
    try:
        for k in values:
            if k is not None:
                validate_top_k(k)
    except TopKError as exc:
        raise FunctionError(str(exc)) from None
    return values


class Classify:
    """``classify(image[, top_k])``: the top-k classes of every argument row.

    The cursor is the next argument row to classify; each tick classifies one model batch of
    rows and emits their predictions. A NULL or undecodable image, or a NULL top_k, yields no
    rows for that argument row.
    """

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        top_k_column(args)
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        ks = top_k_column(args)
        largest = max((k for k in ks if k is not None), default=1)
        per_tick = max(1, min(IMAGES_PER_TICK, MAX_ROWS_PER_TICK // largest))
        rows = state.advance(args.num_rows, per_tick)
        if rows:
            batch = self._predict(args, rows, ks)
            if batch.num_rows:
                out.emit(batch)
        if state.offset >= args.num_rows:
            out.finish()

    def _predict(self, args: Args, rows: range, ks: list[int | None]) -> pa.RecordBatch:
        sources = image_sources(self.ctx, args, rows)
        wanted = [ks[r] for r in rows]
        sources = [s if k is not None else None for s, k in zip(sources, wanted)]
        results = self.ctx.classifier.classify(sources, max((k or 1) for k in wanted))
        return prediction_batch(self.ctx.classifier, rows, results, wanted)


def prediction_batch(classifier: Classifier, rows: range,
                     results: list[Classification | None], ks: list[int | None]
                     ) -> pa.RecordBatch:
    """Rows (input_row, rank, idx, label, wnid, confidence) for each classified argument row."""
    input_rows, ranks, idxs, confidences = [], [], [], []
    for row, result, k in zip(rows, results, ks):
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
    """``image_classes()``: the model's 1000 classes, recomputed from a cursor.

    The result is a pure function of the position, so the state is one integer however many
    ticks the scan takes.
    """

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        total = NUM_CLASSES * args.num_rows
        rows = state.advance(total, ROWS_PER_TICK)
        positions = np.arange(rows.start, rows.stop)
        if len(positions):
            idx = positions % NUM_CLASSES
            info = self.ctx.classifier.info
            out.emit(pa.RecordBatch.from_arrays(
                [pa.array(positions // NUM_CLASSES, pa.int32()), pa.array(idx, pa.int32()),
                 pa.array([info.labels[i] for i in idx], pa.string()),
                 pa.array([info.wnids[i] for i in idx], pa.string())],
                names=[INPUT_ROW, "idx", "label", "wnid"]))
        if state.offset >= total:
            out.finish()


def top_label(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """``top_label(image)``: the single most likely label, NULL where there is no prediction."""

    def call(args: Args) -> pa.Array:
        sources = image_sources(ctx, args, range(args.num_rows))
        results = ctx.classifier.classify(sources, top_k=1)
        labels = ctx.classifier.info.labels
        return pa.array([None if r is None else labels[int(r.indices[0])] for r in results],
                        pa.string())

    return call


def build_registry(ctx: VisionContext) -> Registry:
    registry = Registry()
    top_k = Param("top_k", "INTEGER", DEFAULT_TOP_K, "how many classes per image, 1..1000")
    registry.add(FunctionSpec(
        name="classify",
        kind="table",
        overloads=image_overloads(top_k),
        columns=CLASSIFY_COLUMNS,
        description="Classify images into the 1000 ImageNet classes: the top_k most likely "
                    "classes per image, most likely first. NULL or undecodable images give "
                    "no rows.",
        example="SELECT * FROM vision.classify('test/sql/data/coffee.png', top_k := 3)",
        impl=Classify(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    ))
    registry.add(FunctionSpec(
        name="top_label",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("label", "VARCHAR", "the most likely class, NULL if no prediction"),),
        description="The most likely ImageNet class label of an image; NULL when the image "
                    "is NULL or cannot be decoded.",
        example="SELECT vision.top_label('test/sql/data/coffee.png')",
        impl=top_label(ctx),
        input_rows_per_call=256,
    ))
    registry.add(FunctionSpec(
        name="image_classes",
        kind="table",
        overloads=(Overload(()),),
        columns=(Column("idx", "INTEGER", "class index, 0..999"),
                 Column("label", "VARCHAR", "human-readable class name, unique"),
                 Column("wnid", "VARCHAR", "WordNet id")),
        description="The 1000 ImageNet classes the model predicts, by index.",
        example="SELECT * FROM vision.image_classes() WHERE label LIKE '%cat%'",
        impl=ImageClasses(ctx),
        input_rows_per_call=1,
    ))
    return registry

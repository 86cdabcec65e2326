"""The vision functions, declared on a registry: no transport code lives here.

``build_registry`` wires the functions to a classifier and a path policy (and, when write-back
is on, a prediction sink), so one worker process can serve them over any transport.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import pyarrow as pa

from vgi_vision.imaging import ImageSource, read_source
from vgi_vision.lance.store import RunError, utc_now
from vgi_vision.lance.writeback import WriteBack
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


#: Stored prediction rows per ``predictions()`` tick.
PAGE_ROWS = 512


@dataclass(frozen=True)
class VisionContext:
    """What the vision functions need from the worker that hosts them."""

    classifier: Classifier
    paths: PathPolicy
    sink: WriteBack | None = None

    def store(self) -> WriteBack:
        if self.sink is None:
            raise FunctionError("this worker keeps no results: start it with --lance URI "
                                "(or attach(con, lance=URI))", kind="not_configured")
        return self.sink


@dataclass
class RunState(CursorState):
    """A cursor over argument rows plus the write-back run the call's results belong to."""

    kind: ClassVar[str] = "run"
    run_id: str = ""
    predictions: int = 0
    embeddings: int = 0


@dataclass
class PageState(CursorState):
    """A cursor over stored rows of one pinned table version, per argument row."""

    kind: ClassVar[str] = "page"
    version: int = 0
    row: int = 0


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


def images_per_tick(ks: list[int | None]) -> int:
    """One model batch of images, fewer when their rows would exceed MAX_ROWS_PER_TICK."""
    largest = max((k for k in ks if k is not None), default=1)
    return max(1, min(IMAGES_PER_TICK, MAX_ROWS_PER_TICK // largest))


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
    rows for that argument row. With write-back on, the call is one run: its rows become
    visible in LanceDB together when the scan finishes, or not at all.
    """

    state_type = RunState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> RunState:
        top_k_column(args)
        return RunState(run_id=uuid.uuid4().hex if self.ctx.sink else "")

    def process(self, args: Args, state: RunState, out: Output) -> None:
        ks = top_k_column(args)
        rows = state.advance(args.num_rows, images_per_tick(ks))
        if rows:
            sources = image_sources(self.ctx, args, rows)
            wanted = [ks[r] for r in rows]
            sources = [s if k is not None else None for s, k in zip(sources, wanted)]
            results = self.ctx.classifier.classify(sources, max((k or 1) for k in wanted))
            if self.ctx.sink is not None:
                write_back(self.ctx, state, args, rows, sources, results, wanted)
            batch = prediction_batch(self.ctx.classifier, rows, results, wanted)
            if batch.num_rows:
                out.emit(batch)
        if state.offset >= args.num_rows:
            finish_run(self.ctx, state)
            out.finish()


def write_back(ctx: VisionContext, state: RunState, args: Args, rows: range,
               sources: list[ImageSource], results: list[Classification | None],
               ks: list[int | None]) -> None:
    """Hand one batch of a run's rows to LanceDB (counted before the batch is emitted)."""
    classifier = ctx.classifier
    is_path = args.overload.params[0].type == "VARCHAR"
    given = args[args.overload.params[0].name].slice(rows.start, len(rows)).to_pylist()
    now = utc_now()
    predictions: list[dict[str, Any]] = []
    embeddings: list[dict[str, Any]] = []
    for source, original, result, k in zip(sources, given, results, ks):
        if result is None or k is None:
            continue
        data = read_source(source, classifier.limits)
        common = {"image_key": hashlib.sha256(data or b"").hexdigest(),
                  "path": original if is_path else None, "model": classifier.info.name,
                  "run_id": state.run_id, "created_at": now, "committed": False}
        for rank, (idx, p) in enumerate(zip(result.indices[:k].tolist(),
                                            result.probabilities[:k].tolist()), start=1):
            predictions.append({**common, "rank": rank, "idx": idx,
                                "label": classifier.info.labels[idx], "confidence": p})
        embeddings.append({**common, "label": classifier.info.labels[int(result.indices[0])],
                           "confidence": float(result.probabilities[0]),
                           "vector": result.embedding.tolist()})
    state.predictions += len(predictions)
    state.embeddings += len(embeddings)
    ctx.store().write(state.run_id, predictions, embeddings)


def finish_run(ctx: VisionContext, state: RunState) -> None:
    if ctx.sink is None or not state.run_id:
        return
    try:
        ctx.sink.finish(state.run_id, state.predictions, state.embeddings)
    except RunError as exc:
        raise FunctionError(str(exc), kind="write_failed") from None


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
    """``top_label(image)``: the single most likely label, NULL where there is no prediction.

    With write-back on, each call stores its top-1 predictions as one run.
    """

    def call(args: Args) -> pa.Array:
        rows = range(args.num_rows)
        sources = image_sources(ctx, args, rows)
        results = ctx.classifier.classify(sources, top_k=1)
        if ctx.sink is not None:
            state = RunState(run_id=uuid.uuid4().hex)
            write_back(ctx, state, args, rows, sources, results, [1] * len(rows))
            finish_run(ctx, state)
        labels = ctx.classifier.info.labels
        return pa.array([None if r is None else labels[int(r.indices[0])] for r in results],
                        pa.string())

    return call


PREDICTION_COLUMNS = (
    Column("image_key", "VARCHAR", "sha256 of the image bytes"),
    Column("path", "VARCHAR", "the path given, for the path overloads; else NULL"),
    Column("model", "VARCHAR", "model that made the prediction"),
    Column("rank", "INTEGER", "1 for the most likely class"),
    Column("idx", "INTEGER", "ImageNet-1k class index"),
    Column("label", "VARCHAR", "class label"),
    Column("confidence", "DOUBLE", "softmax probability"),
    Column("run_id", "VARCHAR", "the call that stored the row; a run is stored all or nothing"),
    Column("created_at", "TIMESTAMP", "when the row was written (UTC)"),
)


class Predictions:
    """``predictions()``: every stored prediction, paged from one pinned table version."""

    state_type = PageState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> PageState:
        return PageState(version=self.ctx.store().version())

    def process(self, args: Args, state: PageState, out: Output) -> None:
        if state.row >= args.num_rows:
            out.finish()
            return
        page = self.ctx.store().page(state.version, state.offset, PAGE_ROWS)
        row = state.row
        state.offset += page.num_rows
        if page.num_rows < PAGE_ROWS:
            state.row, state.offset = state.row + 1, 0
        if page.num_rows:
            columns = [c.name for c in PREDICTION_COLUMNS]
            out.emit(pa.RecordBatch.from_arrays(
                [pa.array([row] * page.num_rows, pa.int32())]
                + [page.column(c).combine_chunks() for c in columns],
                names=[INPUT_ROW] + columns))
        if state.row >= args.num_rows:
            out.finish()


class Similar:
    """``similar(image[, k])``: the k stored images nearest by embedding (cosine distance)."""

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        self.ctx.store()
        for k in args["k"].to_pylist():
            if k is not None and not 1 <= k <= NUM_CLASSES:
                raise FunctionError(f"k must be between 1 and {NUM_CLASSES}, got {k}")
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        ks = args["k"].to_pylist()
        rows = state.advance(args.num_rows, images_per_tick(ks))
        results = self.ctx.classifier.classify(image_sources(self.ctx, args, rows), top_k=1)
        found = {name: [] for name in (INPUT_ROW, "rank", "image_key", "path", "label",
                                       "confidence", "distance")}
        for row, result in zip(rows, results):
            if result is None or ks[row] is None:
                continue
            hits = self.ctx.store().nearest(result.embedding.tolist(), ks[row])
            found[INPUT_ROW] += [row] * hits.num_rows
            found["rank"] += list(range(1, hits.num_rows + 1))
            for name in ("image_key", "path", "label", "confidence"):
                found[name] += hits.column(name).to_pylist()
            found["distance"] += hits.column("_distance").to_pylist()
        batch = pa.RecordBatch.from_pydict(found, schema=out.schema)
        if batch.num_rows:
            out.emit(batch)
        if state.offset >= args.num_rows:
            out.finish()


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
    registry.add(FunctionSpec(
        name="predictions",
        kind="table",
        overloads=(Overload(()),),
        columns=PREDICTION_COLUMNS,
        description="Every prediction stored by write-back (a worker started with --lance), "
                    "one row per image and rank; only completed runs are visible.",
        example="SELECT label, count(*) FROM vision.predictions() WHERE rank = 1 GROUP BY label",
        impl=Predictions(ctx),
        input_rows_per_call=1,
    ))
    registry.add(FunctionSpec(
        name="similar",
        kind="table",
        overloads=image_overloads(Param("k", "INTEGER", DEFAULT_TOP_K,
                                        "how many stored images to return, 1..1000")),
        columns=(Column("rank", "INTEGER", "1 for the nearest stored image"),
                 Column("image_key", "VARCHAR", "sha256 of the stored image's bytes"),
                 Column("path", "VARCHAR", "stored path, if it was classified by path"),
                 Column("label", "VARCHAR", "the stored image's top label"),
                 Column("confidence", "DOUBLE", "the stored top label's confidence"),
                 Column("distance", "DOUBLE", "cosine distance of the embeddings, 0 = same")),
        description="The stored images (from write-back) most similar to an image, by the "
                    "cosine distance of their model embeddings.",
        example="SELECT * FROM vision.similar('test/sql/data/cat.png', k := 3)",
        impl=Similar(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    ))
    return registry

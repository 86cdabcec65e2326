"""Write-back and reading back: storing a call's results as one run, ``predictions()``
and ``similar()``."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.functions.common import VisionContext, image_sources, images_per_tick
from vgi_vision.worker.lance.store import CLASSIFICATION, ResultKind, RunError, utc_now
from vgi_vision.worker.registry import Args, Column, FunctionError, Output
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.imaging import ImageSource
from vgi_vision.worker.vision.model import NUM_CLASSES, Classification

#: Stored prediction rows per ``predictions()`` tick.
PAGE_ROWS = 512


@dataclass
class RunState(CursorState):
    """A cursor over argument rows plus the write-back run the call's results belong to."""

    kind: ClassVar[str] = "run"
    run_id: str = ""
    images: int = 0


@dataclass
class PageState(CursorState):
    """A cursor over stored rows of one pinned table version, per argument row."""

    kind: ClassVar[str] = "page"
    version: int = 0
    row: int = 0


def write_back(ctx: VisionContext, state: RunState, args: Args, rows: range,
               sources: list[ImageSource], results: list[Classification | None],
               ks: list[int | None]) -> None:
    """Stage one batch of a run's rows in LanceDB (counted before the batch is emitted).

    ``sources`` are the image bytes (``image_sources`` reads files when write-back is on).
    A continuation of a run that already committed (a replayed or retried request) writes
    nothing: the stored rows stay exactly as they were.
    """
    store = ctx.store()
    if rows.start and store.committed(state.run_id):
        return
    classifier = ctx.classifier
    is_path = args.overload.params[0].type == "VARCHAR"
    given = args[args.overload.params[0].name].slice(rows.start, len(rows)).to_pylist()
    now = utc_now()
    staged: list[dict[str, Any]] = []
    for row, source, original, result, k in zip(rows, sources, given, results, ks, strict=True):
        if result is None or k is None:
            continue
        assert isinstance(source, bytes)  # image_sources reads files when write-back is on
        idxs = result.indices[:k].tolist()
        staged.append({"image_key": hashlib.sha256(source).hexdigest(),
                       "model": classifier.info.name, "path": original if is_path else None,
                       "top_k": len(idxs), "idx": idxs,
                       "label": [classifier.info.labels[i] for i in idxs],
                       "confidence": result.probabilities[:len(idxs)].tolist(),
                       "run_id": state.run_id, "created_at": now,
                       "vector": result.embedding.tolist(), "thumbnail": result.thumbnail,
                       "input_row": row})
    state.images += len(staged)
    store.write(state.run_id, staged)


@contextlib.contextmanager
def rolled_back_on_error(ctx: VisionContext, state: RunState) -> Iterator[None]:
    """A call that fails part-way (a refused path, a write error) leaves none of its rows."""
    try:
        yield
    except Exception:
        if ctx.sink is not None and state.run_id:
            ctx.sink.abort(state.run_id)
        raise


def finish_run(ctx: VisionContext, state: RunState, kind: ResultKind = CLASSIFICATION
               ) -> None:
    if ctx.sink is None or not state.run_id:
        return
    try:
        ctx.sink.finish(state.run_id, state.images, kind)
    except RunError as exc:
        raise FunctionError(str(exc), kind=ErrorKind.WRITE_FAILED) from None


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
    """``predictions()``: every stored image's ranked classes, paged from one pinned version.

    A page is up to ``PAGE_ROWS`` prediction rows made of whole images (at least one image,
    so an image stored with more ranks than a page still comes back in one response).
    Subclasses page through other stored results the same way (``stored_text``).
    """

    state_type = PageState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    #: The stored results this function pages through.
    kind: ResultKind = CLASSIFICATION

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

    def widths(self, images: pa.Table) -> np.ndarray:
        """Output rows each stored image makes."""
        return images.column("top_k").to_numpy(zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        return prediction_rows(images, row)


def prediction_rows(images: pa.Table, row: int) -> pa.RecordBatch:
    """One row per stored image and rank (the image's list columns unnested), for ``row``."""
    images = images.combine_chunks()
    column = {name: images.column(name).chunk(0) for name in images.column_names}
    parents = pc.list_parent_indices(column["idx"])
    widths = column["top_k"].to_numpy(zero_copy_only=False)
    starts = np.repeat(np.cumsum(widths) - widths, widths)
    unnested = {name: column[name].take(parents)
                for name in ("image_key", "path", "model", "run_id", "created_at")}
    unnested |= {name: pc.list_flatten(column[name]) for name in ("idx", "label", "confidence")}
    unnested["rank"] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
    return pa.RecordBatch.from_arrays(
        [pa.array(np.full(len(starts), row), pa.int32())]
        + [unnested[c.name] for c in PREDICTION_COLUMNS],
        names=[INPUT_ROW] + [c.name for c in PREDICTION_COLUMNS])


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
        names = (INPUT_ROW, "rank", "image_key", "path", "label", "confidence", "distance")
        found: dict[str, list[Any]] = {name: [] for name in names}
        for row, result in zip(rows, results, strict=True):
            if result is None or ks[row] is None:
                continue
            hits = self.ctx.store().nearest(result.embedding.tolist(), ks[row])
            found[INPUT_ROW] += [row] * hits.num_rows
            found["rank"] += list(range(1, hits.num_rows + 1))
            for name in ("image_key", "path"):
                found[name] += hits.column(name).to_pylist()
            for name in ("label", "confidence"):  # the stored top-1
                found[name] += pc.list_element(hits.column(name), 0).to_pylist()
            # float32 rounding puts an image's distance to itself a hair below 0
            found["distance"] += [max(0.0, d) for d in hits.column("_distance").to_pylist()]
        batch = pa.RecordBatch.from_pydict(found, schema=out.schema)
        if batch.num_rows:
            out.emit(batch)
        if state.offset >= args.num_rows:
            out.finish()

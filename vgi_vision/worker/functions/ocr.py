"""Text in images: ``ocr`` (one row per line) and ``ocr_text`` (all lines as one string)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.functions.common import VisionContext, image_overloads, image_sources
from vgi_vision.worker.functions.stored import (
    Predictions,
    RunState,
    finish_run,
    rolled_back_on_error,
)
from vgi_vision.worker.lance.store import TEXT, utc_now
from vgi_vision.worker.registry import (
    ROWS_PER_TICK,
    Args,
    Column,
    FunctionError,
    FunctionSpec,
    Output,
    Overload,
    Param,
    Registry,
)
from vgi_vision.worker.vision.imaging import ImageSource
from vgi_vision.worker.vision.ocr import (
    DEFAULT_MIN_CONFIDENCE,
    OCR_MODEL,
    ConfidenceError,
    OcrUnavailable,
    TextLine,
    validate_min_confidence,
)

#: Images read per tick: OCR takes ~0.1-1 s an image, so a tick stays short.
OCR_IMAGES_PER_TICK = 4

#: Lines one tick emits at most; the rest wait in the scan state for the next tick.
LINES_PER_TICK = ROWS_PER_TICK

#: Argument rows a client sends per call: more would only be held (or re-sent over HTTP).
OCR_ROWS_PER_CALL = 16

OCR_COLUMNS = (
    Column("line", "INTEGER", "1 for the first line in reading order (top to bottom, then "
                              "left to right), then 2, 3, ..."),
    Column("text", "VARCHAR", "the recognized text of the line"),
    Column("confidence", "DOUBLE", "recognition confidence in [0, 1]"),
    Column("x0", "INTEGER", "left edge of the line's box, in pixels of the upright image"),
    Column("y0", "INTEGER", "top edge of the box"),
    Column("x1", "INTEGER", "right edge of the box"),
    Column("y1", "INTEGER", "bottom edge of the box"),
)


@dataclass
class OcrState(RunState):
    """The next argument row to read, the lines already read but not yet emitted, and the
    write-back run (if any) the call's results belong to.

    An image with more lines than one tick emits keeps the rest here (an Arrow IPC stream),
    so resuming over HTTP never reads an image twice; only what remains travels.
    """

    kind: ClassVar[str] = "ocr"
    pending: bytes = b""


def min_confidence_column(args: Args) -> list[float | None]:
    """Per-row min_confidence, validated up front so a bad value fails before any work."""
    values = args["min_confidence"].to_pylist()
    try:
        for value in values:
            if value is not None:
                validate_min_confidence(value)
    except ConfidenceError as exc:
        raise FunctionError(str(exc)) from None
    return values


def read_rows(ctx: VisionContext, args: Args, rows: range, sources: list[ImageSource]
              ) -> list[list[TextLine] | None]:
    """The lines of each argument row in ``rows``; None for NULL, unusable or refused rows."""
    confidences = min_confidence_column(args)
    results: list[list[TextLine] | None] = []
    try:
        for row, source in zip(rows, sources, strict=True):
            confidence = confidences[row]
            results.append(None if confidence is None or source is None else
                           ctx.reader.read([source], ctx.classifier.limits, confidence)[0])
    except OcrUnavailable as exc:
        raise FunctionError(str(exc), kind=ErrorKind.NOT_CONFIGURED) from None
    return results


def stage_text(ctx: VisionContext, state: RunState, args: Args, rows: range,
               sources: list[ImageSource], results: list[list[TextLine] | None]) -> None:
    """Stage the lines of one batch of a run's images in LanceDB's ``ocr_staged``: one row
    per image read (an image without text too), keyed like classification write-back by
    the image's sha256 and the OCR model. A continuation of a run that already committed
    (a replayed or retried request) writes nothing."""
    store = ctx.store()
    if rows.start and store.committed(state.run_id):
        return
    is_path = args.overload.params[0].type == "VARCHAR"
    given = args[args.overload.params[0].name].slice(rows.start, len(rows)).to_pylist()
    confidences = args["min_confidence"].to_pylist()
    now = utc_now()
    staged: list[dict[str, Any]] = []
    for row, source, original, lines in zip(rows, sources, given, results, strict=True):
        if lines is None:
            continue
        assert isinstance(source, bytes)  # image_sources reads files when write-back is on
        staged.append({"image_key": hashlib.sha256(source).hexdigest(), "model": OCR_MODEL,
                       "path": original if is_path else None,
                       "min_confidence": confidences[row],
                       "text": [ln.text for ln in lines],
                       "confidence": [ln.confidence for ln in lines],
                       **{edge: [getattr(ln, edge) for ln in lines]
                          for edge in ("x0", "y0", "x1", "y1")},
                       "run_id": state.run_id, "created_at": now, "input_row": row})
    state.images += len(staged)
    store.write(state.run_id, staged, TEXT)


def read_and_stage(ctx: VisionContext, state: RunState, args: Args, rows: range
                   ) -> list[list[TextLine] | None]:
    """Read the images of ``rows`` and, with write-back on, stage what was read."""
    sources = image_sources(ctx, args, rows)
    results = read_rows(ctx, args, rows, sources)
    if ctx.sink is not None and rows:
        stage_text(ctx, state, args, rows, sources, results)
    return results


def line_batch(rows: range, results: list[list[TextLine] | None]) -> pa.RecordBatch:
    """Rows (input_row, line, text, confidence, x0, y0, x1, y1) for every line read."""
    tagged = [(row, number, line)
              for row, lines in zip(rows, results, strict=True) if lines
              for number, line in enumerate(lines, start=1)]
    return pa.RecordBatch.from_arrays(
        [pa.array([row for row, _, _ in tagged], pa.int32()),
         pa.array([n for _, n, _ in tagged], pa.int32()),
         pa.array([ln.text for _, _, ln in tagged], pa.string()),
         pa.array([ln.confidence for _, _, ln in tagged], pa.float64()),
         *(pa.array([getattr(ln, edge) for _, _, ln in tagged], pa.int32())
           for edge in ("x0", "y0", "x1", "y1"))],
        names=[INPUT_ROW] + [c.name for c in OCR_COLUMNS])


def to_ipc(batch: pa.RecordBatch) -> bytes:
    if not batch.num_rows:
        return b""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes, schema: pa.Schema) -> pa.RecordBatch:
    """The pending lines of a state; its bytes were sealed by this worker (HMAC-checked over
    HTTP), so only the schema needs checking."""
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    if not table.schema.equals(schema):
        raise FunctionError("scan state holds lines of another schema", kind=ErrorKind.BAD_REQUEST)
    return table.combine_chunks().to_batches()[0] if table.num_rows else \
        pa.RecordBatch.from_pylist([], schema=schema)


class Ocr:
    """``ocr(image[, min_confidence])``: one row per line of text, in reading order.

    Each tick reads a few images and emits at most LINES_PER_TICK lines; lines beyond that
    stay in the state until later ticks. A NULL or undecodable image, or a NULL
    min_confidence, gives no rows for that argument row.
    """

    state_type = OcrState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> OcrState:
        min_confidence_column(args)
        return OcrState(run_id=uuid.uuid4().hex if self.ctx.sink else "")

    def process(self, args: Args, state: OcrState, out: Output) -> None:
        with rolled_back_on_error(self.ctx, state):
            if state.pending:
                lines = from_ipc(state.pending, out.schema)
            else:
                rows = state.advance(args.num_rows, OCR_IMAGES_PER_TICK)
                lines = line_batch(rows, read_and_stage(self.ctx, state, args, rows))
            state.pending = to_ipc(lines.slice(LINES_PER_TICK))
            if lines.num_rows:
                out.emit(lines.slice(0, LINES_PER_TICK))
            if state.offset >= args.num_rows and not state.pending:
                finish_run(self.ctx, state, TEXT)
                out.finish()


def ocr_text(ctx: VisionContext) -> Callable[[Args], pa.Array]:
    """``ocr_text(image[, min_confidence])``: the lines joined by newlines, NULL if none.

    With write-back on, each call stores what it read as one run.
    """

    def call(args: Args) -> pa.Array:
        rows = range(args.num_rows)
        state = RunState(run_id=uuid.uuid4().hex if ctx.sink else "")
        with rolled_back_on_error(ctx, state):
            results = read_and_stage(ctx, state, args, rows)
            finish_run(ctx, state, TEXT)
        return pa.array(["\n".join(line.text for line in lines) if lines else None
                         for lines in results], pa.string())

    return call


STORED_TEXT_COLUMNS = (
    Column("image_key", "VARCHAR", "sha256 of the image bytes"),
    Column("path", "VARCHAR", "the path given, for the path overloads; else NULL"),
    Column("model", "VARCHAR", "the OCR model that read the text"),
    *OCR_COLUMNS,
    Column("min_confidence", "DOUBLE", "the min_confidence the image was read with"),
    Column("run_id", "VARCHAR", "the call that stored the image; a run is stored all or nothing"),
    Column("created_at", "TIMESTAMP", "when the image was stored (UTC)"),
)


class StoredText(Predictions):
    """``stored_text()``: every line stored by OCR write-back, one row per image and line,
    paged from one pinned table version like ``predictions()``."""

    kind = TEXT

    def widths(self, images: pa.Table) -> np.ndarray:
        return pc.list_value_length(images.column("text")).to_numpy(zero_copy_only=False)

    def rows(self, images: pa.Table, row: int) -> pa.RecordBatch:
        images = images.combine_chunks()
        column = {name: images.column(name).chunk(0) for name in images.column_names}
        parents = pc.list_parent_indices(column["text"])
        widths = self.widths(images)
        starts = np.repeat(np.cumsum(widths) - widths, widths)
        unnested = {name: column[name].take(parents) for name in
                    ("image_key", "path", "model", "min_confidence", "run_id", "created_at")}
        unnested |= {name: pc.list_flatten(column[name])
                     for name in ("text", "confidence", "x0", "y0", "x1", "y1")}
        unnested["line"] = pa.array(np.arange(len(starts)) - starts + 1, pa.int32())
        return pa.RecordBatch.from_arrays(
            [pa.array(np.full(len(starts), row), pa.int32())]
            + [unnested[c.name] for c in STORED_TEXT_COLUMNS],
            names=[INPUT_ROW] + [c.name for c in STORED_TEXT_COLUMNS])


def register(registry: Registry, ctx: VisionContext) -> None:
    """Declare ``ocr`` and ``ocr_text`` on ``registry``."""
    min_confidence = Param("min_confidence", "DOUBLE", DEFAULT_MIN_CONFIDENCE,
                           "lines recognized with less confidence are left out, 0..1")
    registry.add(FunctionSpec(
        name="ocr",
        kind="table",
        overloads=image_overloads(min_confidence),
        columns=OCR_COLUMNS,
        description="Read the text in images (PP-OCR models, offline): one row per line in "
                    "reading order, with its confidence and box in pixels of the upright "
                    "image. NULL, undecodable or textless images give no rows. Needs "
                    "vgi-vision[ocr].",
        example="SELECT line, text FROM vision.ocr('test/sql/text/invoice.png')",
        impl=Ocr(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    ))
    registry.add(FunctionSpec(
        name="ocr_text",
        kind="scalar",
        overloads=image_overloads(min_confidence),
        columns=(Column("text", "VARCHAR", "the lines in reading order, joined by newlines; "
                                           "NULL when no text is found"),),
        description="All the text in an image as one string, lines in reading order joined "
                    "by newlines; NULL when there is none. Needs vgi-vision[ocr].",
        example="SELECT vision.ocr_text('test/sql/text/invoice.png')",
        impl=ocr_text(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    ))
    registry.add(FunctionSpec(
        name="stored_text",
        kind="table",
        overloads=(Overload(()),),
        columns=STORED_TEXT_COLUMNS,
        description="Every text line stored by OCR write-back (a worker started with --lance), "
                    "one row per image and line; only completed runs are visible.",
        example="SELECT path, line, text FROM vision.stored_text() WHERE text ILIKE '%total%'",
        impl=StoredText(ctx),
        input_rows_per_call=1,
    ))

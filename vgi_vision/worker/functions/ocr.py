"""``ocr(image[, min_confidence])``: the text in images, one row per line in reading order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.calls.context import VisionContext, image_overloads
from vgi_vision.worker.calls.runs import RunState, finish_run, rolled_back_on_error
from vgi_vision.worker.calls.text_reading import (
    MIN_CONFIDENCE_PARAM,
    OCR_BOUNDS,
    OCR_ROWS_PER_CALL,
    read_and_stage,
)
from vgi_vision.worker.lance.kinds import TEXT
from vgi_vision.worker.registry import (
    ROWS_PER_TICK,
    Args,
    FunctionError,
    FunctionSpec,
    Output,
)
from vgi_vision.worker.stored import OCR_COLUMNS
from vgi_vision.worker.vision.ocr import TextLine

#: Images read per tick: OCR takes ~0.1-1 s an image, so a tick stays short.
OCR_IMAGES_PER_TICK = 4

#: Lines one tick emits at most; the rest wait in the scan state for the next tick.
LINES_PER_TICK = ROWS_PER_TICK


@dataclass
class OcrState(RunState):
    """The next argument row to read, the lines already read but not yet emitted, and the
    write-back run (if any) the call's results belong to.

    An image with more lines than one tick emits keeps the rest here (an Arrow IPC stream),
    so resuming over HTTP never reads an image twice; only what remains travels.
    """

    kind: ClassVar[str] = "ocr"
    pending: bytes = b""


def spec(ctx: VisionContext) -> FunctionSpec:
    return FunctionSpec(
        name="ocr",
        kind="table",
        overloads=image_overloads(MIN_CONFIDENCE_PARAM),
        columns=OCR_COLUMNS,
        description="Read the text in images (PP-OCR models, offline): one row per line in "
                    "reading order, with its confidence and box in pixels of the upright "
                    "image. NULL, undecodable or textless images give no rows. "
                    f"{OCR_BOUNDS} Needs vgi-vision[ocr].",
        example="SELECT line, text FROM vision.ocr('test/sql/text/invoice.png')",
        impl=Ocr(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    )


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
    """One row per line of text, in reading order.

    Each tick reads a few images and emits at most LINES_PER_TICK lines; lines beyond that
    stay in the state until later ticks. A NULL or undecodable image, or a NULL
    min_confidence, gives no rows for that argument row.
    """

    state_type = OcrState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> OcrState:
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

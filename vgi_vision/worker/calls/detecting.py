"""Finding objects or faces in argument rows, shared by ``detect``, ``faces``,
``count_objects`` and ``count_faces``.

The two table functions page their rows the same way: each tick finds the objects of a few
images and emits at most ``ROWS_PER_TICK`` rows; rows beyond that stay in the scan state (an
Arrow IPC stream of what remains), so an image with many objects spans ticks and resuming over
HTTP never runs the detector on an image twice.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.calls.context import VisionContext, image_sources
from vgi_vision.worker.registry import (
    ROWS_PER_TICK,
    Args,
    Column,
    FunctionError,
    Output,
    Param,
)
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import DEFAULT_MIN_SCORE, Detection
from vgi_vision.worker.vision.imaging import ImageSource

#: Images a detection tick reads: a detector takes ~0.05-0.4 s an image, so a tick stays short.
IMAGES_PER_TICK = 8

#: Argument rows a client sends per call: more would only be held (or re-sent over HTTP).
ROWS_PER_CALL = 32

MIN_SCORE_PARAM = Param("min_score", "DOUBLE", DEFAULT_MIN_SCORE,
                        "detections scored lower are left out", min=0.0, max=1.0)

BOX_COLUMNS = (
    Column("score", "DOUBLE", "the detector's confidence in [0, 1]"),
    Column("x0", "INTEGER", "left edge of the box, in pixels of the image as displayed "
                            "(EXIF orientation applied)"),
    Column("y0", "INTEGER", "top edge of the box"),
    Column("x1", "INTEGER", "right edge of the box"),
    Column("y1", "INTEGER", "bottom edge of the box"),
)

OBJECT_COLUMNS = (
    Column("object", "INTEGER", "1 for the highest-scored object of the image, then 2, 3, ..."),
    Column("label", "VARCHAR", "the object's class (one of COCO's 80)"),
    *BOX_COLUMNS,
)

FACE_COLUMNS = (
    Column("face", "INTEGER", "1 for the highest-scored face of the image, then 2, 3, ..."),
    *BOX_COLUMNS,
)

#: Finds the detections of some images: (sources, decode limits, min_score) -> per image.
Finder = Callable[[Sequence[ImageSource], DecodeLimits, float], list[list[Detection] | None]]


def find_rows(ctx: VisionContext, args: Args, rows: range, find: Finder
              ) -> list[list[Detection] | None]:
    """The detections of each argument row in ``rows``; None for NULL or unusable rows."""
    sources = image_sources(ctx, args, rows)
    scores = args["min_score"].to_pylist()
    return [None if source is None or scores[row] is None else
            find([source], ctx.classifier.limits, scores[row])[0]
            for row, source in zip(rows, sources, strict=True)]


def detection_batch(rows: range, results: list[list[Detection] | None],
                    columns: tuple[Column, ...]) -> pa.RecordBatch:
    """One output row per detection, numbered 1..n within its image, tagged with its row."""
    tagged = [(row, number, found)
              for row, detections in zip(rows, results, strict=True) if detections
              for number, found in enumerate(detections, start=1)]
    values = {columns[0].name: [n for _, n, _ in tagged]}
    for column in columns[1:]:
        values[column.name] = [getattr(d, column.name) for _, _, d in tagged]
    return pa.RecordBatch.from_arrays(
        [pa.array([row for row, _, _ in tagged], pa.int32()),
         *(pa.array(values[c.name], arrow_type(c.type)) for c in columns)],
        names=[INPUT_ROW] + [c.name for c in columns])


def arrow_type(sql_type: str) -> pa.DataType:
    return {"INTEGER": pa.int32(), "VARCHAR": pa.string(), "DOUBLE": pa.float64()}[sql_type]


@dataclass
class DetectState(CursorState):
    """The next argument row to read and the detections found but not yet emitted."""

    kind: ClassVar[str] = "detect"
    pending: bytes = b""


def to_ipc(batch: pa.RecordBatch) -> bytes:
    if not batch.num_rows:
        return b""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes, schema: pa.Schema) -> pa.RecordBatch:
    """The pending rows of a state; its bytes were sealed by this worker (HMAC-checked over
    HTTP), so only the schema needs checking."""
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    if not table.schema.equals(schema):
        raise FunctionError("scan state holds rows of another schema",
                            kind=ErrorKind.BAD_REQUEST)
    return table.combine_chunks().to_batches()[0]


class DetectionScan:
    """One row per detection, best first within each image, paged across ticks (see the
    module). A NULL or unusable image, or a NULL min_score, gives no rows."""

    state_type = DetectState

    def __init__(self, ctx: VisionContext, find: Callable[[], Finder],
                 columns: tuple[Column, ...]) -> None:
        self.ctx, self.find, self.columns = ctx, find, columns

    def initial_state(self, args: Args) -> DetectState:
        return DetectState()

    def process(self, args: Args, state: DetectState, out: Output) -> None:
        if state.pending:
            found = from_ipc(state.pending, out.schema)
        else:
            rows = state.advance(args.num_rows, IMAGES_PER_TICK)
            found = detection_batch(rows, find_rows(self.ctx, args, rows, self.find()),
                                    self.columns)
        state.pending = to_ipc(found.slice(ROWS_PER_TICK))
        if found.num_rows:
            out.emit(found.slice(0, ROWS_PER_TICK))
        if state.offset >= args.num_rows and not state.pending:
            out.finish()


def check_labels(labels: Sequence[str | None], known: Sequence[str], model: str) -> None:
    """Every non-NULL label is one the model knows; else an error naming the closest ones."""
    for label in dict.fromkeys(labels):
        if label is None or label in known:
            continue
        close = difflib.get_close_matches(label, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise FunctionError(f"{label!r} is not a label of {model}{hint} (its {len(known)} "
                            f"labels: {', '.join(known)})", kind=ErrorKind.INVALID_ARGUMENT)

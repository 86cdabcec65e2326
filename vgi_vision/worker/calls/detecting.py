"""Finding objects or faces in argument rows, shared by ``detect``, ``faces``,
``count_objects`` and ``count_faces``.

The two table functions page their rows the same way: each tick finds the objects of a few
images and emits at most ``ROWS_PER_TICK`` rows; rows beyond that stay in the scan state (an
Arrow IPC stream of what remains), so an image with many objects spans ticks and resuming over
HTTP never runs the detector on an image twice.

With write-back on, every call of the four is one run (:mod:`.runs`): what the detector found
in each image (nothing, too) is staged in ``objects_staged`` on the tick that ran it, keyed by
the image's sha256 and the detector's name, and committed into ``objects`` when the call
finishes, so a stored image always holds every detection its run found.
"""

from __future__ import annotations

import difflib
import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.calls.context import VisionContext, image_sources
from vgi_vision.worker.calls.runs import RunState, finish_run, rolled_back_on_error
from vgi_vision.worker.lance.kinds import DETECTION, utc_now
from vgi_vision.worker.registry import (
    ROWS_PER_TICK,
    Args,
    Column,
    FunctionError,
    Output,
    Param,
)
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import DEFAULT_MIN_SCORE, Detection
from vgi_vision.worker.vision.facts import read_info
from vgi_vision.worker.vision.imaging import ImageSource

#: Images a detection tick reads: a detector takes ~0.05-0.4 s an image, so a tick stays short.
IMAGES_PER_TICK = 8

#: Argument rows a client sends per call: more would only be held (or re-sent over HTTP).
ROWS_PER_CALL = 32

MIN_SCORE_PARAM = Param("min_score", "DOUBLE", DEFAULT_MIN_SCORE,
                        "detections scored lower are left out", min=0.0, max=1.0)

class Detector(Protocol):
    """An object or face detector as the functions use it: its name (the stored ``model``)
    and its detections of some images, ``None`` where an image is unusable."""

    @property
    def name(self) -> str: ...

    def detect(self, sources: Sequence[ImageSource], limits: DecodeLimits,
               min_score: float = ...) -> list[list[Detection] | None]: ...


def find_rows(ctx: VisionContext, state: RunState, args: Args, rows: range,
              detector: Detector) -> list[list[Detection] | None]:
    """The detections of each argument row in ``rows``; None for NULL or unusable rows.
    With write-back on, what was found is staged in the run of ``state``."""
    sources = image_sources(ctx, args, rows)
    scores = args["min_score"].to_pylist()
    found = [None if source is None or scores[row] is None else
             detector.detect([source], ctx.classifier.limits, scores[row])[0]
             for row, source in zip(rows, sources, strict=True)]
    if ctx.sink is not None and rows:
        stage_detections(ctx, state, args, rows, sources, found, detector.name)
    return found


def stage_detections(ctx: VisionContext, state: RunState, args: Args, rows: range,
                     sources: list[ImageSource], found: list[list[Detection] | None],
                     model: str) -> None:
    """Stage the detections of one batch of a run's images in ``objects_staged``: one row
    per image searched (an image where nothing was found too), keyed like the other stored
    results by the image's sha256 and the detector. A continuation of a run that already
    committed (a replayed or retried request) writes nothing."""
    store = ctx.store()
    if rows.start and store.committed(state.run_id):
        return
    is_path = args.overload.params[0].type == "VARCHAR"
    given = args[args.overload.params[0].name].slice(rows.start, len(rows)).to_pylist()
    scores = args["min_score"].to_pylist()
    now = utc_now()
    staged: list[dict[str, Any]] = []
    for row, source, original, detections in zip(rows, sources, given, found, strict=True):
        if detections is None:
            continue
        assert isinstance(source, bytes)  # image_sources reads files when write-back is on
        width, height = displayed_size(source, ctx.classifier.limits)
        staged.append({"image_key": hashlib.sha256(source).hexdigest(), "model": model,
                       "path": original if is_path else None, "width": width,
                       "height": height, "min_score": scores[row],
                       **{field: [getattr(d, field) for d in detections]
                          for field in ("label", "score", "x0", "y0", "x1", "y1")},
                       "run_id": state.run_id, "created_at": now, "input_row": row})
    state.images += len(staged)
    store.write(state.run_id, staged, DETECTION)


def displayed_size(source: bytes, limits: DecodeLimits) -> tuple[int | None, int | None]:
    """The image's width and height as displayed (sides swapped for an EXIF orientation that
    turns it), read from its headers: what the stored boxes are relative to, so a reader can
    draw them on any rendition of the image."""
    info = read_info(source, limits)
    if info is None:
        return None, None
    turned = info.orientation in (5, 6, 7, 8)
    return (info.height, info.width) if turned else (info.width, info.height)


def new_run(ctx: VisionContext) -> RunState:
    """The state of a call's run: with an id when write-back is on."""
    return RunState(run_id=uuid.uuid4().hex if ctx.sink else "")


def counted(ctx: VisionContext, args: Args, detector: Detector,
            count: Callable[[list[Detection], int], int | None]) -> pa.Array:
    """A scalar call as one run: ``count(detections, row)`` of each argument row, NULL for
    NULL or unusable rows; what was found is stored with write-back on."""
    state = new_run(ctx)
    with rolled_back_on_error(ctx, state):
        found = find_rows(ctx, state, args, range(args.num_rows), detector)
        finish_run(ctx, state, DETECTION)
    return pa.array([None if detections is None else count(detections, row)
                     for row, detections in enumerate(found)], pa.int32())


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
class DetectState(RunState):
    """The next argument row to read, the detections found but not yet emitted, and the
    write-back run (if any) the call's results belong to."""

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

    def __init__(self, ctx: VisionContext, detector: Callable[[], Detector],
                 columns: tuple[Column, ...]) -> None:
        self.ctx, self.detector, self.columns = ctx, detector, columns

    def initial_state(self, args: Args) -> DetectState:
        return DetectState(run_id=new_run(self.ctx).run_id)

    def process(self, args: Args, state: DetectState, out: Output) -> None:
        with rolled_back_on_error(self.ctx, state):
            if state.pending:
                found = from_ipc(state.pending, out.schema)
            else:
                rows = state.advance(args.num_rows, IMAGES_PER_TICK)
                found = detection_batch(
                    rows, find_rows(self.ctx, state, args, rows, self.detector()),
                    self.columns)
            state.pending = to_ipc(found.slice(ROWS_PER_TICK))
            if found.num_rows:
                out.emit(found.slice(0, ROWS_PER_TICK))
            if state.offset >= args.num_rows and not state.pending:
                finish_run(self.ctx, state, DETECTION)
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

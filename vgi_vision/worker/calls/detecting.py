"""Finding objects or faces in argument rows, shared by ``detect``, ``faces``,
``count_objects`` and ``count_faces``.

The two table functions page their rows like ``ocr`` (:mod:`.item_pages`): an image with many
objects spans ticks and resuming over HTTP never runs the detector on an image twice.

With write-back on, every call of the four is one run (:mod:`.runs`): what the detector found
in each image (nothing, too) is staged in ``objects_staged`` on the tick that ran it, keyed by
the image's sha256 and the detector's name, and committed into ``objects`` when the call
finishes, so a stored image always holds every detection its run found.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from vgi_vision.protocol import INPUT_ROW, ErrorKind
from vgi_vision.worker.calls.context import VisionContext, image_sources
from vgi_vision.worker.calls.item_pages import ItemPages, PendingState
from vgi_vision.worker.calls.runs import (
    RunState,
    finish_run,
    new_run_id,
    rolled_back_on_error,
    stage_images,
)
from vgi_vision.worker.lance.kinds import DETECTION
from vgi_vision.worker.registry import (
    Args,
    Column,
    FunctionError,
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
    """Stage the detections of one batch of a run's images in ``objects_staged``, keyed
    like the other stored results by the image's sha256 and the detector."""
    scores = args["min_score"].to_pylist()

    def fields(row: int, source: bytes, detections: list[Detection]) -> dict[str, Any]:
        width, height = displayed_size(source, ctx.classifier.limits)
        return {"model": model, "width": width, "height": height, "min_score": scores[row],
                **{field: [getattr(d, field) for d in detections]
                   for field in ("label", "score", "x0", "y0", "x1", "y1")}}

    stage_images(ctx, state, args, rows, sources, found, DETECTION, fields)


def displayed_size(source: bytes, limits: DecodeLimits) -> tuple[int | None, int | None]:
    """The image's width and height as displayed (sides swapped for an EXIF orientation that
    turns it), read from its headers: what the stored boxes are relative to, so a reader can
    draw them on any rendition of the image."""
    info = read_info(source, limits)
    if info is None:
        return None, None
    turned = info.orientation in (5, 6, 7, 8)
    return (info.height, info.width) if turned else (info.width, info.height)


def counted(ctx: VisionContext, args: Args, detector: Detector,
            count: Callable[[list[Detection], int], int | None]) -> pa.Array:
    """A scalar call as one run: ``count(detections, row)`` of each argument row, NULL for
    NULL or unusable rows; what was found is stored with write-back on."""
    state = RunState(run_id=new_run_id(ctx))
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
class DetectState(PendingState):
    """The paging state of ``detect`` and ``faces`` (:mod:`.item_pages`)."""

    kind: ClassVar[str] = "detect"


class DetectionScan(ItemPages):
    """One row per detection, best first within each image, paged across ticks (see
    :mod:`.item_pages`). A NULL or unusable image, or a NULL min_score, gives no rows."""

    state_type = DetectState
    kind = DETECTION
    images_per_tick = IMAGES_PER_TICK

    def __init__(self, ctx: VisionContext, detector: Callable[[], Detector],
                 columns: tuple[Column, ...]) -> None:
        super().__init__(ctx)
        self.detector, self.columns = detector, columns

    def read(self, args: Args, state: PendingState, rows: range) -> pa.RecordBatch:
        return detection_batch(rows, find_rows(self.ctx, state, args, rows, self.detector()),
                               self.columns)


def check_labels(labels: Sequence[str | None], known: Sequence[str], model: str) -> None:
    """Every non-NULL label is one the model knows; else an error naming the closest ones."""
    for label in dict.fromkeys(labels):
        if label is None or label in known:
            continue
        close = difflib.get_close_matches(label, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise FunctionError(f"{label!r} is not a label of {model}{hint} (its {len(known)} "
                            f"labels: {', '.join(known)})", kind=ErrorKind.INVALID_ARGUMENT)

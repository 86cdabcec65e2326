"""The context a worker gives every vision function, and the image arguments they share.

``VisionContext`` is all a function may touch of its worker: the classifier, the OCR reader,
the detectors, the path policy and, when write-back is on, the LanceDB sink. No transport
code lives here.
Argument bounds (``top_k``, ``k``, ``threshold``, ...) are declared on each function's
``Param`` and checked by the registry, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import MISSING_ERROR, PathPolicy, checked_missing
from vgi_vision.worker.registry import Args, FunctionError, Overload, Param
from vgi_vision.worker.vision.detection import ObjectDetector, load_object_detector
from vgi_vision.worker.vision.faces import FaceDetector, load_face_detector
from vgi_vision.worker.vision.imaging import ImageSource, read_source
from vgi_vision.worker.vision.model import Classifier
from vgi_vision.worker.vision.ocr import TextReader, load_text_reader

#: Images classified per tick: one model batch.
IMAGES_PER_TICK = 32


#: Upper bound on rows one classify tick emits (bounds a response when top_k is large).
MAX_ROWS_PER_TICK = 4096


@dataclass(frozen=True)
class VisionContext:
    """What the vision functions need from the worker that hosts them."""

    classifier: Classifier
    paths: PathPolicy
    sink: WriteBack | None = None
    reader: TextReader = field(default_factory=load_text_reader)
    #: The detectors, loaded on first use: a worker that never detects never reads them.
    objects: Callable[[], ObjectDetector] = load_object_detector
    faces: Callable[[], FaceDetector] = load_face_detector

    def store(self) -> WriteBack:
        if self.sink is None:
            raise FunctionError("this worker keeps no results: start it with --lance URI "
                                "(or attach(con, lance=URI))", kind=ErrorKind.NOT_CONFIGURED)
        return self.sink


#: Every image function's last parameter: what a path naming no file gives. It is on the BLOB
#: overload too (ignored there) because both overloads are bound as one SQL macro.
MISSING_PARAM = Param("missing", "VARCHAR", MISSING_ERROR,
                      "a path naming no file, or a folder: 'error' (default) fails the query "
                      "naming the path; 'null' gives what an unreadable image gives (NULL, "
                      "no rows)")


def image_overloads(*extra: Param) -> tuple[Overload, ...]:
    """The same signature twice: image bytes (BLOB) or a path to read (VARCHAR)."""
    return (
        Overload((Param("image", "BLOB", doc="encoded image bytes (JPEG, PNG, WebP, ...)"),
                  *extra, MISSING_PARAM)),
        Overload((Param("path", "VARCHAR", doc="path of an image file"), *extra,
                  MISSING_PARAM)),
    )


def image_sources(ctx: VisionContext, args: Args, rows: range) -> list[ImageSource]:
    """The images of ``rows``: bytes as given; paths through the path policy.

    Under a data root the policy reads the files itself (checked against the opened file);
    with write-back on, files are read here too, once: the bytes are both classified and
    hashed into the stored ``image_key``.
    """
    missing = [checked_missing(m) for m in
               args["missing"].slice(rows.start, len(rows)).to_pylist()]
    if args.overload.params[0].type == "BLOB":
        return args["image"].slice(rows.start, len(rows)).to_pylist()
    limit = ctx.classifier.limits.max_bytes
    paths = args["path"].slice(rows.start, len(rows)).to_pylist()
    sources: list[ImageSource] = list(ctx.paths.sources(paths, limit, missing))
    if ctx.sink is not None:
        return [read_source(s, ctx.classifier.limits) for s in sources]
    return sources


def images_per_tick(ks: list[int | None]) -> int:
    """One model batch of images, fewer when their rows would exceed MAX_ROWS_PER_TICK."""
    largest = max((k for k in ks if k is not None), default=1)
    return max(1, min(IMAGES_PER_TICK, MAX_ROWS_PER_TICK // largest))

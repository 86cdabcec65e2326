"""Reading text in images with the PP-OCR models that ``rapidocr`` ships and runs on onnxruntime.

Like :mod:`vgi_vision.worker.vision.model` this knows nothing of Arrow, transports or DuckDB:
sources in, text lines out. It is total on untrusted images (a bad image gives ``None``) and
raises only when OCR itself is unavailable: ``rapidocr`` is an optional dependency
(``vgi-vision[ocr]``), imported on first use so that a worker without it still starts and
serves everything else.

Images never reach rapidocr as paths or bytes: it would open paths (and fetch URLs) itself,
outside the worker's path policy and decode limits. They are decoded here, upright, and
handed over as pixels.

The work one image costs is bounded: at most :data:`MAX_LINES` text boxes are recognized, and
recognition stops :data:`MAX_SECONDS` after the image's reading began; what was read until
then is the image's result (a warning is logged). The process's one set of OCR sessions is
shared in turns taken in arrival order (:class:`Turns`): one detection, or the recognition
of :data:`LINES_PER_TURN` boxes, a turn. So a call reading many long pages slows a one-image
call beside it by a turn per turn, instead of making it wait until all its pages are read.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vgi_vision.errors import ModelError, VgiVisionError
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.imaging import ImageSource, OrientedImage, decode_upright
from vgi_vision.worker.vision.model import default_threads
from vgi_vision.worker.vision.turns import Turns

log = logging.getLogger(__name__)

#: The ``model`` under which write-back stores OCR results (rapidocr's default models).
OCR_MODEL = "PP-OCRv6_small"

#: The longer side OCR reads an image at (rapidocr's own bound): larger images are downscaled
#: while decoding, and boxes are scaled back to the original pixels.
MAX_SIDE = 2000

#: Shorter sides are padded to this: rapidocr would instead upscale the whole image until its
#: shorter side reached it, which turns a 2000 x 1 picture into gigabytes.
MIN_SIDE = 64

#: Lines below this recognition confidence are dropped unless the caller asks otherwise.
DEFAULT_MIN_CONFIDENCE = 0.5

#: Lines recognized with less confidence are read again upside down (see upside_down_retried).
RETRY_BELOW = 0.9

#: Text boxes recognized in one image at most, the first in reading order from the top: a
#: dense page holds ~60 lines. An image with more gives its first MAX_LINES lines.
MAX_LINES = 200

#: Seconds one image's recognition may run (its detection always completes): boxes not yet
#: recognized by then are left out. ~0.1 s a box on two cores: MAX_LINES fit with room.
MAX_SECONDS = 60.0

#: Boxes recognized in one turn of the shared OCR sessions.
LINES_PER_TURN = 8

INSTALL_HINT = "OCR needs the optional dependency rapidocr: pip install 'vgi-vision[ocr]'"


class OcrUnavailable(ModelError):
    """rapidocr is not installed (or cannot be imported) in the worker's environment."""


class ConfidenceError(VgiVisionError, ValueError):
    """``min_confidence`` is outside 0..1."""


def validate_min_confidence(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= value <= 1.0:
        raise ConfidenceError(f"min_confidence must be between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TextLine:
    """One line of text and its axis-aligned box in pixels of the upright original image."""

    text: str
    confidence: float
    x0: int
    y0: int
    x1: int
    y1: int


class TextReader:
    """One lazily created rapidocr engine shared by every caller of the process.

    Each step (a detection, a few boxes' recognition) runs alone, in turns taken in arrival
    order: the sessions already use every core, and the engine keeps per-call settings on
    itself. ``max_lines`` and ``max_seconds`` bound one image's work (see the module).
    """

    def __init__(self, threads: int | None = None, max_lines: int = MAX_LINES,
                 max_seconds: float = MAX_SECONDS) -> None:
        self.threads = threads or default_threads()
        self.max_lines = max_lines
        self.max_seconds = max_seconds
        self.turns = Turns()
        self._engine: Any = None
        self._lock = threading.Lock()

    def engine(self) -> Any:
        """The rapidocr engine, created on first use; :class:`OcrUnavailable` without it."""
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _create_engine(self) -> Any:
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise OcrUnavailable(f"{INSTALL_HINT} ({exc})") from None
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        threads = {f"EngineConfig.onnxruntime.{name}": n
                   for name, n in (("intra_op_num_threads", self.threads),
                                   ("inter_op_num_threads", 1))}
        try:
            return RapidOCR(params={"Global.log_level": "error", "Global.text_score": 0.0,
                                    "Global.use_cls": False,
                                    "Global.max_side_len": MAX_SIDE,
                                    "Det.limit_type": "min", "Det.limit_side_len": 64, **threads})
        except Exception as exc:  # rapidocr and onnxruntime raise their own untyped errors
            raise ModelError(f"the OCR models cannot be loaded: {exc}") from exc

    def read(self, sources: Sequence[ImageSource], limits: DecodeLimits,
             min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> list[list[TextLine] | None]:
        """The lines of every source in reading order; ``None`` where an image is unusable."""
        engine = self.engine()
        min_confidence = validate_min_confidence(min_confidence)
        results: list[list[TextLine] | None] = []
        for source in sources:
            image = decode_upright(source, limits, MAX_SIDE)
            results.append(None if image is None
                           else self._read_image(engine, image, min_confidence))
        return results

    def _read_image(self, engine: Any, image: OrientedImage, min_confidence: float
                    ) -> list[TextLine]:
        bgr = padded_to(MIN_SIDE, np.ascontiguousarray(image.pixels[:, :, ::-1]))
        deadline = time.monotonic() + self.max_seconds
        try:
            with self.turns.held():
                found = engine(bgr, use_det=True, use_cls=False, use_rec=False)
            if found.boxes is None:
                return []
            boxes = [np.asarray(box, dtype=np.float32) for box in found.boxes]
            texts, scores = self._recognized(
                engine, [text_crop(bgr, box) for box in boxes[:self.max_lines]], deadline)
            if len(texts) < len(boxes):
                log.warning("OCR read %d of the %d text boxes of a %dx%d image (at most %d "
                            "boxes and %g s an image)", len(texts), len(boxes), image.width,
                            image.height, self.max_lines, self.max_seconds)
            boxes = boxes[:len(texts)]
            texts, scores, turned = upside_down_retried(
                lambda crops: self._recognized(engine, crops, deadline), bgr, boxes, texts,
                scores)
        except Exception as exc:  # noqa: BLE001 - one odd image must not fail the query
            log.warning("OCR failed on a %dx%d image: %s: %s", image.width, image.height,
                        type(exc).__name__, exc)
            return []
        lines = [(line_in_original(text, score, box, image), text_turn(box, flipped))
                 for text, score, box, flipped in zip(texts, scores, boxes, turned, strict=True)
                 if score >= min_confidence and text.strip()]
        turns = [turn for _, turn in lines]
        return reading_order([line for line, _ in lines],
                             max(set(turns), key=turns.count) if turns else 0)

    def _recognized(self, engine: Any, crops: list[np.ndarray], deadline: float
                    ) -> tuple[list[str], list[float]]:
        """The text and score of each crop, LINES_PER_TURN a turn, until ``deadline``: then
        those of the crops read so far."""
        texts: list[str] = []
        scores: list[float] = []
        for start in range(0, len(crops), LINES_PER_TURN):
            if time.monotonic() >= deadline:
                break
            with self.turns.held():
                found = engine.recognize_txt(crops[start:start + LINES_PER_TURN])
            texts.extend(found.txts)
            scores.extend(float(score) for score in found.scores)
        return texts, scores


def upside_down_retried(recognize: Callable[[list[np.ndarray]], tuple[list[str], list[float]]],
                        bgr: np.ndarray, boxes: list[np.ndarray], texts: list[str],
                        scores: list[float]) -> tuple[list[str], list[float], list[bool]]:
    """Lines read with little confidence, read again turned 180 degrees; the better reading wins.

    rapidocr's angle classifier is off: on upright text it flipped ~1 line in 20 and turned it
    into confident-looking garbage. A line that is really upside down reads badly upright, so
    only those lines pay for a second recognition (by ``recognize``, which may read fewer
    than it is given when time runs out). Also says which lines read better turned.
    """
    doubtful = [i for i, score in enumerate(scores) if score < RETRY_BELOW]
    flipped = [False] * len(texts)
    if not doubtful:
        return texts, scores, flipped
    turned = [np.ascontiguousarray(np.rot90(text_crop(bgr, boxes[i]), 2)) for i in doubtful]
    again_texts, again_scores = recognize(turned)
    texts, scores = list(texts), list(scores)
    for i, text, score in zip(doubtful, again_texts, again_scores, strict=False):
        if float(score) > scores[i]:
            texts[i], scores[i], flipped[i] = text, float(score), True
    return texts, scores, flipped


def text_crop(bgr: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The pixels of a detected box, straightened to a horizontal strip (as rapidocr crops)."""
    from rapidocr.utils.process_img import get_rotate_crop_image

    return get_rotate_crop_image(bgr, quad.copy())


def text_turn(quad: np.ndarray, flipped: bool) -> int:
    """How far a line's text is turned counter-clockwise in the picture: 0, 90, 180 or 270.

    rapidocr turns a tall crop 90 degrees counter-clockwise before reading it, and
    :func:`upside_down_retried` may have turned it 180 more.
    """
    width = float(np.linalg.norm(quad[0] - quad[1]))
    height = float(np.linalg.norm(quad[0] - quad[3]))
    tall = height >= 1.5 * width
    return (90 if flipped else 270) if tall else (180 if flipped else 0)


def padded_to(side: int, bgr: np.ndarray) -> np.ndarray:
    """``bgr`` (OpenCV channel order, as rapidocr takes it) extended right and down to at least
    ``side`` pixels each way with its median colour; coordinates are unchanged."""
    height, width = bgr.shape[:2]
    if height >= side and width >= side:
        return bgr
    fill = np.median(bgr.reshape(-1, 3), axis=0).astype(np.uint8)
    out = np.empty((max(side, height), max(side, width), 3), dtype=np.uint8)
    out[:] = fill
    out[:height, :width] = bgr
    return out


def line_in_original(text: str, confidence: float, quad: np.ndarray, image: OrientedImage
                     ) -> TextLine:
    """A detected quadrilateral as an axis-aligned box in the original image's pixels."""
    scaled = quad * image.scale
    x0, y0 = np.floor(scaled.min(axis=0)).astype(int)
    x1, y1 = np.ceil(scaled.max(axis=0)).astype(int)
    return TextLine(text=text.strip(), confidence=confidence,
                    x0=int(np.clip(x0, 0, image.width)), y0=int(np.clip(y0, 0, image.height)),
                    x1=int(np.clip(x1, 0, image.width)), y1=int(np.clip(y1, 0, image.height)))


#: A line's box (x0, y0, x1, y1) seen in the frame where its text is upright.
_UPRIGHT: dict[int, Callable[[TextLine], tuple[int, int, int, int]]] = {
    0: lambda ln: (ln.x0, ln.y0, ln.x1, ln.y1),
    90: lambda ln: (-ln.y1, ln.x0, -ln.y0, ln.x1),
    180: lambda ln: (-ln.x1, -ln.y1, -ln.x0, -ln.y0),
    270: lambda ln: (ln.y0, -ln.x1, ln.y1, -ln.x0),
}


def reading_order(lines: list[TextLine], turn: int = 0) -> list[TextLine]:
    """Top to bottom as the text stands (``turn`` degrees counter-clockwise in the picture);
    boxes whose vertical centre lies within a row's first box share the row and are read
    left to right."""
    upright = _UPRIGHT[turn]
    rows: list[list[tuple[tuple[int, int, int, int], TextLine]]] = []
    for box, line in sorted(((upright(ln), ln) for ln in lines),
                            key=lambda item: (item[0][1], item[0][0])):
        centre = (box[1] + box[3]) / 2
        if rows and rows[-1][0][0][1] <= centre <= rows[-1][0][0][3]:
            rows[-1].append((box, line))
        else:
            rows.append([(box, line)])
    return [line for row in rows for _, line in sorted(row, key=lambda item: item[0][0])]


@functools.cache
def load_text_reader() -> TextReader:
    """The process-wide reader (one set of OCR sessions per process)."""
    return TextReader()

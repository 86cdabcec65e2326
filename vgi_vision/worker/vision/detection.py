"""Finding objects in images with an SSD-style detector: sources in, boxes out.

Like :mod:`model` and :mod:`ocr` this knows nothing of Arrow, transports or DuckDB. It is total
on untrusted images: an image that fails the decode limits or budget gives ``None``. Images
are decoded upright (EXIF orientation applied) with their longer side at most the detector's
``input.max_side``, so boxes are reported in pixels of the image as displayed, scaled back to
its full size.

A process holds one session per detector, created on first use; runs take turns in arrival
order (:class:`Turns`), because one run already uses every core.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vgi_vision.errors import ModelError, VgiVisionError
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detector_files import (
    OBJECT_DETECTOR,
    DetectorInfo,
    resolve_detector,
)
from vgi_vision.worker.vision.imaging import ImageSource, OrientedImage, decode_upright
from vgi_vision.worker.vision.model import default_threads, session_options
from vgi_vision.worker.vision.model_files import verify_sha256
from vgi_vision.worker.vision.turns import Turns

#: Detections below this score are left out unless the caller asks otherwise.
DEFAULT_MIN_SCORE = 0.5


class ScoreError(VgiVisionError, ValueError):
    """``min_score`` is outside 0..1."""


def validate_min_score(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= value <= 1.0:
        raise ScoreError(f"min_score must be between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Detection:
    """One object: its label, score and box in pixels of the upright original image."""

    label: str
    score: float
    x0: int
    y0: int
    x1: int
    y1: int


def box_in_pixels(label: str, score: float, box: np.ndarray, image: OrientedImage
                  ) -> Detection:
    """A normalized ``[x0, y0, x1, y1]`` box as whole pixels of the upright original image,
    widened outwards to whole pixels and clipped to the image."""
    x0, x1 = (float(np.clip(v, 0.0, 1.0)) * image.width for v in (box[0], box[2]))
    y0, y1 = (float(np.clip(v, 0.0, 1.0)) * image.height for v in (box[1], box[3]))
    return Detection(label=label, score=float(score), x0=math.floor(x0), y0=math.floor(y0),
                     x1=math.ceil(x1), y1=math.ceil(y1))


class DetectorSession:
    """One detector's onnxruntime session, created (after a checksum check) on first use and
    run in turns."""

    def __init__(self, info: DetectorInfo, threads: int | None = None) -> None:
        self.info = info
        self.threads = threads or default_threads()
        self.turns = Turns()
        self._session: Any = None
        self._lock = threading.Lock()

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        """The detector's outputs (in the order of ``info.outputs``) for one input tensor."""
        session = self.session()
        with self.turns.held():
            return list(session.run(list(self.info.outputs.values()),
                                    {self.info.input_name: feed}))

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = self._create()
            return self._session

    def _create(self) -> Any:
        import onnxruntime as ort

        info = self.info
        verify_sha256(info.onnx_file, info.sha256)
        options = session_options(self.threads)
        try:
            session = ort.InferenceSession(str(info.onnx_file), sess_options=options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {info.onnx_file}: {exc}") from exc
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        missing = [n for n in info.outputs.values() if n not in outputs]
        if info.input_name not in inputs or missing:
            raise ModelError(f"{info.onnx_file}: metadata.json names the input "
                             f"{info.input_name!r} and outputs {list(info.outputs.values())}, "
                             f"the graph has inputs {inputs} and outputs {outputs}")
        return session


class ObjectDetector:
    """An SSD-style detector whose graph does its own post-processing (see
    :mod:`detector_files`): it takes uint8 pixels of any size, answers with the best boxes."""

    def __init__(self, info: DetectorInfo, threads: int | None = None) -> None:
        if info.kind != "ssd":
            raise ModelError(f"{info.directory}: {info.name} is a {info.kind} detector, not "
                             f"an object (ssd) detector")
        self.info = info
        self.session = DetectorSession(info, threads)

    @property
    def name(self) -> str:
        """The model's name: what write-back stores its detections under."""
        return self.info.name

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.info.labels.values())

    def detect(self, sources: Sequence[ImageSource], limits: DecodeLimits,
               min_score: float = DEFAULT_MIN_SCORE) -> list[list[Detection] | None]:
        """The objects of every source, best first; ``None`` where an image is unusable."""
        min_score = validate_min_score(min_score)
        results: list[list[Detection] | None] = []
        for source in sources:
            image = decode_upright(source, limits, self.info.size)
            results.append(None if image is None else self._detect(image, min_score))
        return results

    def _detect(self, image: OrientedImage, min_score: float) -> list[Detection]:
        boxes, scores, classes, count = self.session.run(image.pixels[None])
        found: list[Detection] = []
        for box, score, class_id in zip(boxes[0][:int(count[0])], scores[0], classes[0],
                                        strict=False):
            label = self.info.labels.get(int(class_id))
            if label is None or score < min_score:
                continue
            ymin, xmin, ymax, xmax = box
            found.append(box_in_pixels(label, score, np.array([xmin, ymin, xmax, ymax]),
                                       image))
        return sorted(found, key=lambda d: -d.score)


@functools.cache
def load_object_detector(name: str = OBJECT_DETECTOR) -> ObjectDetector:
    """The process-wide object detector (one session per process), loaded on first use."""
    return ObjectDetector(DetectorInfo.load(resolve_detector(name)))

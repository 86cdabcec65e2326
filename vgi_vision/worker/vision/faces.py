"""Finding faces with MediaPipe's BlazeFace detectors: anchor decoding and weighted
non-maximum suppression, in numpy.

BlazeFace graphs answer with raw numbers: for every anchor (a fixed point on a grid over the
square input) a box offset and a logit. This module turns them into boxes. Two shipped models
see different faces: the short-range one close-up faces (portraits, selfies), the full-range
one small faces further away (group photos). Both run on every image and their candidates are
merged by one weighted non-maximum suppression, so a face either model finds is reported once.

Images are decoded upright (EXIF orientation applied) and letterboxed into the square input
(the whole picture, aspect kept, padded), so boxes map back to the displayed image exactly.
Total on untrusted images like :mod:`detection`: an unusable image gives ``None``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image

from vgi_vision.errors import ModelError
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import (
    DEFAULT_MIN_SCORE,
    Detection,
    DetectorSession,
    box_in_pixels,
    validate_min_score,
)
from vgi_vision.worker.vision.detector_files import (
    FACE_DETECTORS,
    DetectorInfo,
    resolve_detector,
)
from vgi_vision.worker.vision.imaging import ImageSource, OrientedImage, decode_upright

#: The longer side images are decoded at: a few times the largest input (192), so the
#: letterbox resize averages over real pixels.
DECODE_SIDE = 768

#: Candidates overlapping the best remaining one by more than this (intersection over union)
#: are the same face (MediaPipe's setting for both models).
SAME_FACE_IOU = 0.3

#: Logits are clipped to this before the sigmoid (MediaPipe's raw score limit), so a hostile
#: or degenerate output cannot overflow.
LOGIT_LIMIT = 100.0


def anchor_centres(size: int, grid: Sequence[tuple[int, int]]) -> np.ndarray:
    """``(n, 2)`` anchor centres ``(x, y)`` in [0, 1], in the order the model emits them:
    per feature map, row by row, cell by cell, ``per_cell`` anchors at each cell's centre."""
    centres = []
    for stride, per_cell in grid:
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        cell = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cell, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, size: int) -> np.ndarray:
    """``(n, 4)`` boxes ``[x0, y0, x1, y1]`` in [0, 1] of the square input, from the raw
    offsets (centre x, centre y, width, height in input pixels, relative to unit-size
    anchors; the keypoints after them are not used)."""
    centre = anchors + raw[:, 0:2] / size
    half = raw[:, 2:4] / size / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def sigmoid_scores(logits: np.ndarray) -> np.ndarray:
    clipped = np.clip(logits.astype(np.float64), -LOGIT_LIMIT, LOGIT_LIMIT)
    return 1.0 / (1.0 + np.exp(-clipped))


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each of ``boxes``; 0 where the union is 0."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = np.prod(np.clip(box[2:] - box[:2], 0.0, None))
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=1)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = SAME_FACE_IOU
                 ) -> list[tuple[np.ndarray, float]]:
    """One ``(box, score)`` per face, best first: the best remaining candidate and every
    candidate overlapping it by more than ``threshold`` are one face, whose box is their
    score-weighted mean and whose score is the best one's.

    Averaging the overlapping boxes (MediaPipe's "weighted" suppression) steadies a face's
    box across the two models and neighbouring anchors instead of keeping one anchor's.
    """
    remaining = np.argsort(-scores, kind="stable")
    faces: list[tuple[np.ndarray, float]] = []
    while remaining.size:
        best = remaining[0]
        same = iou(boxes[best], boxes[remaining]) > threshold
        same[0] = True  # the best is its own face even when its box is empty
        group = remaining[same]
        weights = scores[group]
        box = (boxes[group] * weights[:, None]).sum(axis=0) / weights.sum() \
            if weights.sum() > 0 else boxes[best]
        faces.append((box, float(scores[best])))
        remaining = remaining[~same]
    return faces


def letterbox(image: OrientedImage, size: int) -> tuple[np.ndarray, float, float, float]:
    """The picture resized to fit a ``size`` square (aspect kept, centred, padded with
    black), as a ``1 x size x size x 3`` float input in [-1, 1]; with the resize factor and
    the left and top padding, to map boxes back."""
    height, width = image.pixels.shape[:2]
    factor = size / max(width, height)
    fitted = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = Image.fromarray(image.pixels).resize(fitted, Image.Resampling.BILINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    left, top = (size - fitted[0]) // 2, (size - fitted[1]) // 2
    canvas[top:top + fitted[1], left:left + fitted[0]] = np.asarray(resized)
    return (canvas.astype(np.float32) / 127.5 - 1.0)[None], factor, left, top


class FaceModel:
    """One BlazeFace graph and its anchors."""

    def __init__(self, info: DetectorInfo, threads: int | None = None) -> None:
        if info.kind != "blazeface":
            raise ModelError(f"{info.directory}: {info.name} is a {info.kind} detector, not "
                             f"a face (blazeface) detector")
        self.info = info
        self.session = DetectorSession(info, threads)
        self.anchors = anchor_centres(info.size, info.anchor_grid)

    def candidates(self, image: OrientedImage) -> tuple[np.ndarray, np.ndarray]:
        """Every anchor's box, in [0, 1] of the picture, and score."""
        size = self.info.size
        feed, factor, left, top = letterbox(image, size)
        raw, logits = self.session.run(feed)
        if raw.shape[1] != len(self.anchors):
            raise ModelError(f"{self.info.onnx_file}: {raw.shape[1]} boxes for "
                             f"{len(self.anchors)} anchors; check anchors.grid")
        boxes = decode_boxes(raw[0], self.anchors, size) * size  # input pixels
        height, width = image.pixels.shape[:2]
        offset = np.array([left, top, left, top], dtype=np.float32)
        extent = np.array([width, height, width, height], dtype=np.float32) * factor
        return (boxes - offset) / extent, sigmoid_scores(logits[0, :, 0])


class FaceDetector:
    """Faces found by every model of ``models``, merged (see the module)."""

    def __init__(self, models: Sequence[FaceModel]) -> None:
        self.models = list(models)

    @property
    def name(self) -> str:
        """The merged models' names joined by ``+``: what write-back stores faces under
        (other models would find other faces)."""
        return "+".join(model.info.name for model in self.models)

    def detect(self, sources: Sequence[ImageSource], limits: DecodeLimits,
               min_score: float = DEFAULT_MIN_SCORE) -> list[list[Detection] | None]:
        """The faces of every source, best first; ``None`` where an image is unusable."""
        min_score = validate_min_score(min_score)
        results: list[list[Detection] | None] = []
        for source in sources:
            image = decode_upright(source, limits, DECODE_SIDE)
            results.append(None if image is None else self._detect(image, min_score))
        return results

    def _detect(self, image: OrientedImage, min_score: float) -> list[Detection]:
        found = [model.candidates(image) for model in self.models]
        boxes = np.concatenate([b for b, _ in found])
        scores = np.concatenate([s for _, s in found])
        keep = scores >= min_score
        return [box_in_pixels("face", score, box, image)
                for box, score in weighted_nms(boxes[keep], scores[keep])]


@functools.cache
def load_face_detector(names: tuple[str, ...] = FACE_DETECTORS) -> FaceDetector:
    """The process-wide face detector (one session per model), loaded on first use."""
    return FaceDetector([FaceModel(DetectorInfo.load(resolve_detector(n))) for n in names])

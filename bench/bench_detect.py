"""Object and face detection throughput against the bare model, and int8 against fp32.

For 512x512 and 4000x3000 JPEGs (``bench/images.py``; the large ones with sensor-like grain,
so they cost what a camera's photo costs to decode), each detector's whole path (the encoded
bytes through decoding, EXIF orientation, resizing, the model and the box decoding:
``ObjectDetector.detect`` / ``FaceDetector.detect``) is timed against the baseline measured in
the same run: the same ONNX graphs in a bare onnxruntime session with the same threads, fed
inputs that are already decoded and resized. The ratio is baseline time / full time (1.0 = no
overhead; decoding a 12-megapixel JPEG is work the model does not do, so the large images
show what decoding costs).

With ``--fp32 PATH`` (the fp32 ``ssd.onnx`` that ``scripts/export_detectors.py --work DIR``
keeps), the shipped object detector (float16-stored weights) is compared with it, and so is
every ``--variant PATH`` (another graph of the same model, e.g. one with int8 weights): speed,
and agreement of the detections (same label, boxes overlapping by IoU >= 0.5) on the
committed photographs, their variants and 64 generated crops.

Usage: python -m bench.bench_detect [--images 16] [--repeats 3] [--fp32 PATH [--variant PATH]]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.images import make_jpegs, photo_variants
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import Detection, ObjectDetector
from vgi_vision.worker.vision.detector_files import (
    FACE_DETECTORS,
    OBJECT_DETECTOR,
    DetectorInfo,
    resolve_detector,
)
from vgi_vision.worker.vision.faces import DECODE_SIDE, FaceDetector, FaceModel, iou, letterbox
from vgi_vision.worker.vision.imaging import decode_upright

LIMITS = DecodeLimits()


def timed(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` runs after one warm-up."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def object_rates(detector: ObjectDetector, images: list[bytes], repeats: int
                 ) -> tuple[float, float]:
    """(full path, bare session) images/s."""
    pixels = [decode_upright(data, LIMITS, detector.info.size) for data in images]
    feeds = [p.pixels[None] for p in pixels if p is not None]
    session = detector.session

    def bare() -> None:
        for feed in feeds:
            session.run(feed)

    full = timed(lambda: detector.detect(images, LIMITS), repeats)
    return len(images) / full, len(feeds) / timed(bare, repeats)


def face_rates(detector: FaceDetector, images: list[bytes], repeats: int
               ) -> tuple[float, float]:
    decoded = [decode_upright(data, LIMITS, DECODE_SIDE) for data in images]
    feeds = [[(model, letterbox(image, model.info.size)[0]) for model in detector.models]
             for image in decoded if image is not None]

    def bare() -> None:
        for per_model in feeds:
            for model, feed in per_model:
                model.session.run(feed)

    full = timed(lambda: detector.detect(images, LIMITS), repeats)
    return len(images) / full, len(feeds) / timed(bare, repeats)


def detector_of(onnx_file: Path, folder: Path) -> ObjectDetector:
    """The shipped detector's directory with another graph of the same model in place."""
    import hashlib

    shutil.copytree(resolve_detector(OBJECT_DETECTOR), folder)
    shutil.copyfile(onnx_file, folder / "model.onnx")
    meta = json.loads((folder / "metadata.json").read_text())
    meta.update(name=f"ssd-mobilenet-v2-coco-{onnx_file.stem}",
                sha256=hashlib.sha256(onnx_file.read_bytes()).hexdigest())
    (folder / "metadata.json").write_text(json.dumps(meta))
    return ObjectDetector(DetectorInfo.load(folder))


def matched(ours: list[Detection], theirs: list[Detection]) -> int:
    """How many of ``ours`` have a detection of the same label in ``theirs`` at IoU >= 0.5."""
    count = 0
    for d in ours:
        boxes = np.array([[t.x0, t.y0, t.x1, t.y1] for t in theirs if t.label == d.label],
                         dtype=np.float64).reshape(-1, 4)
        count += bool(len(boxes)) and \
            bool(iou(np.array([d.x0, d.y0, d.x1, d.y1], dtype=np.float64), boxes).max() >= 0.5)
    return count


def agreement(fp32: ObjectDetector, other: ObjectDetector, images: list[bytes]
              ) -> tuple[int, float, float, float]:
    """(fp32 detections, share the other found, share of the other's that fp32 has, images
    with the same labels)."""
    a = [r or [] for r in fp32.detect(images, LIMITS)]
    b = [r or [] for r in other.detect(images, LIMITS)]
    total_a, total_b = sum(map(len, a)), sum(map(len, b))
    found = sum(matched(x, y) for x, y in zip(a, b, strict=True))
    kept = sum(matched(y, x) for x, y in zip(a, b, strict=True))
    alike = sum(sorted(d.label for d in x) == sorted(d.label for d in y)
                for x, y in zip(a, b, strict=True))
    return total_a, found / max(1, total_a), kept / max(1, total_b), alike / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fp32", type=Path, help="the fp32 ssd.onnx to compare with")
    parser.add_argument("--variant", type=Path, action="append", default=[],
                        help="another graph of the model to compare with fp32 (repeatable)")
    args = parser.parse_args()
    objects = ObjectDetector(DetectorInfo.load(resolve_detector(OBJECT_DETECTOR)))
    faces = FaceDetector([FaceModel(DetectorInfo.load(resolve_detector(n)))
                          for n in FACE_DETECTORS])
    sets = {"512x512": make_jpegs(args.images, seed=3),
            "4000x3000": make_jpegs(max(2, args.images // 4), size=(4000, 3000), seed=3,
                                    grain=4.0)}
    with tempfile.TemporaryDirectory() as tmp:
        compared = {"shipped": objects}
        if args.fp32:
            compared["fp32"] = detector_of(args.fp32, Path(tmp) / "fp32")
            for i, path in enumerate(args.variant):
                compared[path.stem] = detector_of(path, Path(tmp) / f"variant{i}")
        print("| function | images | full path img/s | bare session img/s | ratio |")
        print("|---|---|---|---|---|")
        for name, images in sets.items():
            runs = [(f"detect ({label})", object_rates(detector, images, args.repeats))
                    for label, detector in compared.items()]
            runs.append(("faces", face_rates(faces, images, args.repeats)))
            for label, (full, bare) in runs:
                print(f"| {label} | {name} | {full:.1f} | {bare:.1f} | {full / bare:.2f}x |")
        if args.fp32:
            photos = list(photo_variants().values())
            crops = make_jpegs(64, seed=7)
            print("\n| graph | images | n | fp32 detections | found | of its own, in fp32 | "
                  "same labels |")
            print("|---|---|---|---|---|---|---|")
            for label, detector in compared.items():
                if label == "fp32":
                    continue
                for kind, images in (("photographs + variants", photos), ("crops", crops)):
                    n, found, kept, alike = agreement(compared["fp32"], detector, images)
                    print(f"| {label} | {kind} | {len(images)} | {n} | {found:.0%} | "
                          f"{kept:.0%} | {alike:.0%} |")

if __name__ == "__main__":
    main()

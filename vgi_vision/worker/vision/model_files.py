"""A model directory (``model.onnx``, ``labels.tsv``, ``metadata.json``), read and validated.

The shipped models and a user's own classifier are the same kind of thing: a folder whose
metadata says how to feed the ONNX graph and what its outputs mean. Every way the folder can
be wrong gets its own one-line :class:`ModelError` naming the file and the problem, at load
time, so a worker with a bad model refuses to start instead of failing on the first query.
Checks that need the graph itself (input shape, output widths) live in :func:`check_graph`,
run once when the onnxruntime session is created.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vgi_vision.errors import ModelError
from vgi_vision.worker.vision.imaging import Preprocessing

DEFAULT_MODEL = "efficientnet-lite0"
LAYOUTS = ("NCHW", "NHWC")
#: Largest input side accepted: every decoded image becomes a size x size x 3 array, so a
#: mistyped size must not make each image (and the start-up probe) cost gigabytes.
MAX_INPUT_SIZE = 4096
#: Images in the start-up test run: more than one, so a graph that ignores the batch
#: dimension (answering one row whatever it is given) is caught before it mislabels rows.
PROBE_BATCH = 2


def models_root() -> Path:
    """Folder holding the shipped ``<model>/model.onnx``; ``VGI_VISION_MODELS`` overrides it.

    The models' one source folder is ``models/`` at the top of the repository, which
    ``pyproject.toml`` maps into the package: an installed wheel has ``vgi_vision/models/``,
    a checkout (plain ``PYTHONPATH`` or an editable install) has only the top-level folder.
    """
    override = os.environ.get("VGI_VISION_MODELS")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[2]
    installed = package / "models"
    return installed if installed.is_dir() else package.parent / "models"


def resolve_model(ref: str | os.PathLike[str]) -> Path:
    """The directory ``ref`` names: a shipped model's name, or a path to a model directory."""
    text = os.fspath(ref)
    shipped = models_root() / text
    if os.sep not in text and "/" not in text and (shipped / "metadata.json").is_file():
        return shipped
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    names = ", ".join(shipped_model_names()) or "none"
    raise ModelError(f"unknown model {text!r}: not a shipped model in {models_root()} "
                     f"(shipped: {names}) nor a model directory")


def shipped_folders() -> list[Path]:
    """Every shipped model directory, classifiers and detectors alike."""
    root = models_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "metadata.json").is_file())


def is_detector(directory: Path) -> bool:
    """A model directory whose metadata names a ``detector`` kind (see ``detector_files``)
    rather than describing a classifier."""
    try:
        return "detector" in _read_metadata(directory / "metadata.json")
    except ModelError:
        return False


def shipped_model_names() -> list[str]:
    """The shipped classifiers (the detectors are listed by ``detector_files``)."""
    return [p.name for p in shipped_folders() if not is_detector(p)]


def verify_sha256(path: Path, expected: str) -> None:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError as exc:
        raise ModelError(f"model file missing: {path}; re-clone the repository or run "
                         f"scripts/export_model.py") from exc
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc.strerror}") from exc
    if digest != expected:
        raise ModelError(f"model file {path} is corrupt: sha256 {digest} does not match the "
                         f"recorded {expected}; restore it from the repository")


@dataclass(frozen=True)
class ModelInfo:
    """Everything recorded next to ``model.onnx``: enough to run it and to describe it."""

    name: str
    directory: Path
    onnx_file: Path
    sha256: str
    input_name: str
    layout: str
    prep: Preprocessing
    mean: np.ndarray
    std: np.ndarray
    labels: tuple[str, ...]
    wnids: tuple[str | None, ...]
    logits_output: str
    embedding_output: str | None
    embedding_dim: int  # 0 when the model has no embedding output
    precision: str
    license: str
    shipped: bool
    metadata: dict

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, directory: Path) -> ModelInfo:
        """Read and check ``metadata.json`` and the label table; the ONNX file must exist."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ModelError(f"model directory {directory} does not exist")
        meta = _read_metadata(directory / "metadata.json")
        field = _Fields(meta, directory / "metadata.json")
        onnx_file = directory / field.get("file", str, "model.onnx")
        if not onnx_file.is_file():
            raise ModelError(f"model file missing: {onnx_file}; re-clone the repository or "
                             f"run scripts/export_model.py")
        labels, wnids = read_labels(directory / field.get("labels", str, "labels.tsv"))
        declared = field.get("num_classes", int, len(labels))
        if declared != len(labels):
            raise ModelError(f"{directory / 'metadata.json'}: num_classes is {declared} but "
                             f"the label table has {len(labels)} classes")
        size = field.get("input.size", list)
        if len(size) != 2 or size[0] != size[1] or not isinstance(size[0], int) \
                or not 1 <= size[0] <= MAX_INPUT_SIZE:
            raise ModelError(f"{directory / 'metadata.json'}: input.size must be a square "
                             f"[n, n] with n in 1..{MAX_INPUT_SIZE}, got {size!r}")
        layout = field.get("input.layout", str, "NCHW")
        if layout not in LAYOUTS:
            raise ModelError(f"{directory / 'metadata.json'}: input.layout must be one of "
                             f"{', '.join(LAYOUTS)}, got {layout!r}")
        resize_shorter_side = field.get("input.resize_shorter_side", int, size[0])
        if not size[0] <= resize_shorter_side <= MAX_INPUT_SIZE:
            raise ModelError(f"{directory / 'metadata.json'}: input.resize_shorter_side must "
                             f"be in {size[0]}..{MAX_INPUT_SIZE} (at least input.size), got "
                             f"{resize_shorter_side}")
        embedding_output = field.get("outputs.embedding", str, None)
        embedding_dim = field.get("embedding_dim", int) if embedding_output else 0
        shape = (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)
        name = field.get("name", str)
        shipped = directory.parent.resolve() == models_root().resolve()
        if not shipped and name in shipped_model_names():
            raise ModelError(f"{directory / 'metadata.json'}: name {name!r} is a shipped "
                             f"model's; give your model a name of its own (results are "
                             f"stored under the model's name)")
        return cls(
            name=name,
            directory=directory,
            onnx_file=onnx_file,
            sha256=field.get("sha256", str),
            input_name=field.get("input.name", str),
            layout=layout,
            prep=Preprocessing(size=size[0], resize_shorter_side=resize_shorter_side),
            mean=_channels(field, "input.normalization.mean").reshape(shape),
            std=_channels(field, "input.normalization.std").reshape(shape),
            labels=labels,
            wnids=wnids,
            logits_output=field.get("outputs.logits", str),
            embedding_output=embedding_output,
            embedding_dim=embedding_dim,
            precision=field.get("precision", str, "fp32"),
            license=field.get("license", str),
            shipped=shipped,
            metadata=meta,
        )


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model metadata missing: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return meta


_MISSING = object()


class _Fields:
    """Typed look-ups of dotted keys in ``metadata.json``, each failure naming the key."""

    def __init__(self, meta: dict[str, Any], path: Path) -> None:
        self.meta, self.path = meta, path

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        value: Any = self.meta
        for part in key.split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ModelError(f"{self.path}: required key {key!r} is missing")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ModelError(f"{self.path}: {key!r} must be {kind.__name__}, got {value!r}")
        return value


def _channels(field: _Fields, key: str) -> np.ndarray:
    values = field.get(key, list)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v) for v in values):
        raise ModelError(f"{field.path}: {key!r} must be three finite numbers (R, G, B), got "
                         f"{values!r}")
    if key.endswith("std") and min(values) <= 0:
        raise ModelError(f"{field.path}: {key!r} must be positive, got {values!r}")
    return np.asarray(values, dtype=np.float32)


def label_table_lines(path: Path) -> list[str]:
    """The lines of a label table (classifier or detector), or a ModelError naming it."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelError(f"label table missing: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"label table {path} is not readable UTF-8 text: {exc}") from None


def read_labels(path: Path) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """The class labels (and WordNet ids, where the table has them) in index order.

    A tab-separated table with a header naming ``idx`` and ``label`` (``wnid`` optional);
    row ``i`` must have ``idx`` ``i``, so a lost or shuffled line cannot shift labels.
    """
    lines = label_table_lines(path)
    header = lines[0].split("\t") if lines else []
    if "idx" not in header or "label" not in header:
        raise ModelError(f"label table {path}: the first line must be a tab-separated header "
                         f"with the columns idx and label (wnid optional)")
    labels: list[str] = []
    wnids: list[str | None] = []
    for number, line in enumerate(lines[1:]):
        row = dict(zip(header, line.split("\t"), strict=False))
        if row.get("idx") != str(number) or not row.get("label", "").strip():
            raise ModelError(f"label table {path}, line {number + 2}: expected idx {number} "
                             f"and a label, got {line!r}")
        labels.append(row["label"].strip())
        wnids.append(row.get("wnid") or None)
    if not labels:
        raise ModelError(f"label table {path} has no classes")
    if len(set(labels)) != len(labels):
        raise ModelError(f"label table {path}: labels must be unique")
    return tuple(labels), tuple(wnids)


def check_graph(info: ModelInfo, session: Any) -> None:
    """The ONNX graph matches what the metadata says: input shape, outputs, output widths.

    Static dimensions are compared with the metadata; the widths of the outputs are checked
    on a real run of :data:`PROBE_BATCH` blank images, which also covers graphs with symbolic
    dimensions, and each output must have one row per image.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    if info.input_name not in inputs:
        raise ModelError(f"{info.onnx_file}: has no input {info.input_name!r} (its inputs: "
                         f"{', '.join(inputs)}); fix input.name in metadata.json")
    shape = list(inputs[info.input_name].shape)
    size = info.prep.size
    wanted = [None, 3, size, size] if info.layout == "NCHW" else [None, size, size, 3]
    if len(shape) != 4 or any(isinstance(d, int) and w is not None and d != w
                              for d, w in zip(shape, wanted, strict=False)):
        described = "x".join("N" if w is None else str(w) for w in wanted)
        raise ModelError(f"{info.onnx_file}: input {info.input_name!r} has shape {shape}, "
                         f"but metadata.json describes {described} ({info.layout})")
    outputs = [o.name for o in session.get_outputs()]
    for role, name in (("logits", info.logits_output), ("embedding", info.embedding_output)):
        if name is not None and name not in outputs:
            raise ModelError(f"{info.onnx_file}: metadata.json names the {role} output "
                             f"{name!r}, which the model does not have (its outputs: "
                             f"{', '.join(outputs)})")
    probe_shape = ((PROBE_BATCH, 3, size, size) if info.layout == "NCHW"
                   else (PROBE_BATCH, size, size, 3))
    wanted_outputs = [n for n in (info.logits_output, info.embedding_output) if n]
    try:
        results = session.run(wanted_outputs,
                              {info.input_name: np.zeros(probe_shape, dtype=np.float32)})
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{info.onnx_file}: a test run on {PROBE_BATCH} blank images "
                         f"failed: {exc}") from exc
    for name, result in zip(wanted_outputs, results, strict=True):
        if result.ndim != 2 or result.shape[0] != PROBE_BATCH:
            raise ModelError(f"{info.onnx_file}: the output {name!r} has shape "
                             f"{list(result.shape)} for a batch of {PROBE_BATCH} images; it "
                             f"must have one row per image (a batch dimension)")
    widths = [r.shape[-1] for r in results]
    if widths[0] != info.num_classes:
        raise ModelError(f"{info.onnx_file}: the logits output {info.logits_output!r} has "
                         f"shape {list(results[0].shape)} per image batch, but the label table "
                         f"has {info.num_classes} classes")
    if info.embedding_output and widths[1] != info.embedding_dim:
        raise ModelError(f"{info.onnx_file}: the embedding output {info.embedding_output!r} "
                         f"has shape {list(results[1].shape)}, but metadata.json says "
                         f"embedding_dim {info.embedding_dim}")


def available_models(serving: ModelInfo) -> list[ModelInfo]:
    """The shipped models, plus the serving one when it is a directory of the user's own.

    A shipped folder that does not load is left out (its error shows when it is served).
    """
    found: list[ModelInfo] = []
    for name in shipped_model_names():
        try:
            found.append(ModelInfo.load(models_root() / name))
        except ModelError:
            continue
    if not any(info.directory.resolve() == serving.directory.resolve() for info in found):
        found.append(serving)
    return found

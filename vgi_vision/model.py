"""Batched ImageNet inference with onnxruntime: sources in, predictions out.

This module knows nothing of Arrow, transports or DuckDB, so the model can be tested and
benchmarked alone. It is total on untrusted images (a bad image gives ``None``) and raises only
for model-level failures (missing or corrupt model files, invalid ``top_k``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgi_vision.imaging import DecodeBudget, DecodeLimits, ImageSource, Preprocessing, decode

NUM_CLASSES = 1000
DEFAULT_MODEL = "efficientnet-lite0"
#: Images decoded together: decoding the next batch overlaps inference of this one.
DEFAULT_BATCH_SIZE = 32
#: Images per onnxruntime run. Small runs keep activations in cache: on the 2-core machines
#: this was measured on, 4 images per run gave ~400 images/s against ~290 at 32
#: (bench/bench_inference.py --batch-sizes). Still batched: never one run per image.
DEFAULT_RUN_BATCH = 4


class ModelError(RuntimeError):
    """The model itself is unusable (missing, corrupt, or misdescribed files)."""


class TopKError(ValueError):
    """``top_k`` is outside 1..1000."""


def models_root() -> Path:
    """Folder holding ``<model>/model.onnx``: shipped inside the package; ``VGI_VISION_MODELS``
    overrides it."""
    override = os.environ.get("VGI_VISION_MODELS")
    return Path(override) if override else Path(__file__).resolve().parent / "models"


def validate_top_k(top_k: int) -> int:
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) \
            or not 1 <= top_k <= NUM_CLASSES:
        raise TopKError(f"top_k must be between 1 and {NUM_CLASSES}, got {top_k!r}")
    return int(top_k)


@dataclass(frozen=True)
class ModelInfo:
    """Everything recorded next to ``model.onnx``: enough to run it and to describe it."""

    name: str
    directory: Path
    onnx_file: Path
    sha256: str
    input_name: str
    prep: Preprocessing
    mean: np.ndarray
    std: np.ndarray
    labels: tuple[str, ...]
    wnids: tuple[str, ...]
    embedding_dim: int
    metadata: dict

    @classmethod
    def load(cls, directory: Path) -> ModelInfo:
        """Read ``metadata.json`` and the label table, failing with the file that is wrong."""
        meta_file = directory / "metadata.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            inp = meta["input"]
            norm = inp["normalization"]
            labels_file = directory / meta["labels"]
            rows = [line.rstrip("\n").split("\t")
                    for line in labels_file.read_text(encoding="utf-8").splitlines()[1:]]
            if len(rows) != NUM_CLASSES:  # a lost line would shift every later label
                raise ValueError(f"{labels_file} has {len(rows)} classes, not {NUM_CLASSES}")
            return cls(
                name=meta["name"],
                directory=directory,
                onnx_file=directory / meta["file"],
                sha256=meta["sha256"],
                input_name=inp["name"],
                prep=Preprocessing(size=int(inp["size"][0]),
                                   resize_shorter_side=int(inp["resize_shorter_side"])),
                mean=np.asarray(norm["mean"], dtype=np.float32).reshape(1, 3, 1, 1),
                std=np.asarray(norm["std"], dtype=np.float32).reshape(1, 3, 1, 1),
                labels=tuple(row[2] for row in rows),
                wnids=tuple(row[1] for row in rows),
                embedding_dim=int(meta["embedding_dim"]),
                metadata=meta,
            )
        except FileNotFoundError as exc:
            raise ModelError(f"model file missing: {exc.filename}; re-clone the repository or "
                             f"run scripts/export_model.py") from exc
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise ModelError(f"model metadata in {directory} is invalid: {exc!r}") from exc


@dataclass(frozen=True)
class Classification:
    """Top-k classes of one image (probability descending) and its L2-normalized embedding."""

    indices: np.ndarray
    probabilities: np.ndarray
    embedding: np.ndarray


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


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _SessionSlot:
    """Where a classifier's lazily created session lives, so views made by
    :meth:`Classifier.with_limits` share the one session whichever of them creates it."""

    def __init__(self) -> None:
        self.session = None
        self.lock = threading.Lock()


class Classifier:
    """One lazily created, warmed-up onnxruntime session shared by every caller.

    ``classify`` may be called from many threads: decoding runs in parallel on a small pool,
    while model runs are serialized, because one run already uses every core (intra-op
    threads) and concurrent runs would only fight over them.
    """

    def __init__(self, info: ModelInfo, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 run_batch: int = DEFAULT_RUN_BATCH,
                 threads: int | None = None, limits: DecodeLimits = DecodeLimits()) -> None:
        if batch_size < 1 or run_batch < 1:
            raise ValueError("batch_size and run_batch must be >= 1")
        self.info = info
        self.batch_size = batch_size
        self.run_batch = run_batch
        self.threads = threads or default_threads()
        self.limits = limits
        self._slot = _SessionSlot()
        self._run_lock = threading.Lock()
        self._decoder = ThreadPoolExecutor(max_workers=self.threads,
                                           thread_name_prefix="vgi-decode")
        self._budget = DecodeBudget(limits.pool_bytes)  # the pool's memory, shared by callers

    @property
    def session(self):
        """The onnxruntime session, created (after a checksum check) on first use."""
        slot = self._slot
        if slot.session is None:
            with slot.lock:
                if slot.session is None:
                    slot.session = self._create_session()
        return slot.session

    def with_limits(self, limits: DecodeLimits) -> Classifier:
        """This classifier with other decode limits, sharing its session, locks and decode pool.

        A process holds one classifier per model (``load_classifier``): a second onnxruntime
        session would double the memory and fight the first over the cores. A worker's own
        ``--max-image-mb`` / ``--max-pixels`` are applied through a view made here.
        """
        view = copy.copy(self)
        view.limits = limits
        view._budget = DecodeBudget(limits.pool_bytes)
        return view

    def _create_session(self):
        import onnxruntime as ort

        verify_sha256(self.info.onnx_file, self.info.sha256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(self.info.onnx_file), sess_options=options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {self.info.onnx_file}: {exc}") from exc

    def warm_up(self) -> None:
        """Create the session and run one batch so the first real query is not the slow one."""
        size = self.info.prep.size
        self.run(np.zeros((1, size, size, 3), dtype=np.uint8))

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on ``N x H x W x 3`` uint8 pixels: (probabilities, unit embeddings)."""
        # One strided pass into a contiguous NCHW float array, then in-place arithmetic on
        # contiguous memory: same values, ~4x cheaper than normalizing a transposed view
        # (and onnxruntime no longer has to copy a non-contiguous input).
        batch = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
        batch -= self.info.mean
        batch /= self.info.std
        session = self.session
        outputs = []
        with self._run_lock:
            for start in range(0, len(batch), self.run_batch):
                outputs.append(session.run(None, {self.info.input_name:
                                                  batch[start:start + self.run_batch]}))
        logits = np.concatenate([o[0] for o in outputs])
        embedding = np.concatenate([o[1] for o in outputs])
        return softmax(logits), l2_normalize(embedding)

    def decode(self, source: ImageSource) -> np.ndarray | None:
        return decode(source, self.limits, self.info.prep, self._budget)

    def classify(self, sources: Sequence[ImageSource], top_k: int = 5
                 ) -> list[Classification | None]:
        """Classify every source; ``None`` where an image could not be decoded."""
        top_k = validate_top_k(top_k)
        results: list[Classification | None] = []
        for pixels in self._decoded_batches(sources):
            results.extend(self._classify_decoded(pixels, top_k))
        return results

    def _decoded_batches(self, sources: Sequence[ImageSource]
                         ) -> Iterator[list[np.ndarray | None]]:
        """Decoded images batch by batch, decoding the next batch while the caller infers."""
        starts = range(0, len(sources), self.batch_size)
        pending: list[Future] | None = None
        for start in starts:
            submitted = [self._decoder.submit(self.decode, s)
                         for s in sources[start:start + self.batch_size]]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]

    def _classify_decoded(self, decoded: list[np.ndarray | None], top_k: int
                          ) -> list[Classification | None]:
        good = [i for i, pixels in enumerate(decoded) if pixels is not None]
        out: list[Classification | None] = [None] * len(decoded)
        if not good:
            return out
        probabilities, embeddings = self.run(np.stack([p for p in decoded if p is not None]))
        indices = top_k_indices(probabilities, top_k)
        for row, i in enumerate(good):
            out[i] = Classification(indices=indices[row],
                                    probabilities=probabilities[row, indices[row]],
                                    embedding=embeddings[row])
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def top_k_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest probabilities per row, largest first (ties: lower index).

    A stable sort, so ties at the k-th place also go to the lower index (argpartition picks
    an arbitrary one of them); ~1 ms for a 32 x 1000 batch, noise next to the model run.
    """
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


@functools.cache
def load_classifier(name: str = DEFAULT_MODEL) -> Classifier:
    """The process-wide classifier for a shipped model (one onnxruntime session per process)."""
    return Classifier(ModelInfo.load(models_root() / name))

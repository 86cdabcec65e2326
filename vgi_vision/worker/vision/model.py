"""Batched ImageNet inference with onnxruntime: sources in, predictions out.

This module knows nothing of Arrow, transports or DuckDB, so the model can be tested and
benchmarked alone. It is total on untrusted images (a bad image gives ``None``) and raises only
for model-level failures (missing or corrupt model files, invalid ``top_k``).
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vgi_vision.errors import ModelError, VgiVisionError
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.folding import folded_model
from vgi_vision.worker.vision.imaging import Decoded, ImageSource, decode, decode_image
from vgi_vision.worker.vision.model_files import (
    DEFAULT_MODEL,
    ModelInfo,
    check_graph,
    models_root,
    resolve_model,
    verify_sha256,
)
from vgi_vision.worker.vision.providers import check_provider, providers_for
from vgi_vision.worker.vision.turns import Turns

__all__ = ["DEFAULT_MODEL", "DEFAULT_TOP_K", "MIN_TOP_K", "NUM_CLASSES", "Classification",
           "Classifier", "ModelInfo", "TopKError", "load_classifier", "models_root",
           "validate_top_k"]

#: Classes of the shipped ImageNet-1k models; a model's own count is ``info.num_classes``.
NUM_CLASSES = 1000
#: Classes per image when the caller names no ``top_k``: the one default that SQL
#: ``classify``, the ``classify`` command and :meth:`Classifier.classify` share.
DEFAULT_TOP_K = 5
#: The fewest classes ``top_k`` may ask for; the most is the model's class count. SQL checks
#: the pair through the ``top_k`` parameter's bounds, Python through :func:`validate_top_k`.
MIN_TOP_K = 1
#: Images decoding ahead of the model (their decoding overlaps the model's runs), and the
#: images one caller classifies per turn when several callers share the classifier.
DEFAULT_BATCH_SIZE = 32
#: Images per onnxruntime run. Small runs keep activations in cache: on the 2-core machines
#: this was measured on, 4 images per run gave ~400 images/s against ~290 at 32
#: (bench/bench_inference.py --batch-sizes). Still batched: never one run per image.
DEFAULT_RUN_BATCH = 4
#: How long an idle onnxruntime thread spins before it sleeps (see :func:`session_options`).
SPIN_MICROSECONDS = 50


class TopKError(VgiVisionError, ValueError):
    """``top_k`` is outside 1..the model's class count."""


def validate_top_k(top_k: int, num_classes: int = NUM_CLASSES) -> int:
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) \
            or not MIN_TOP_K <= top_k <= num_classes:
        raise TopKError(f"top_k must be between {MIN_TOP_K} and {num_classes}, got {top_k!r}")
    return int(top_k)


@dataclass(frozen=True)
class Classification:
    """Top-k classes of one image (probability descending) and its L2-normalized embedding
    (empty for a model without an embedding output)."""

    indices: np.ndarray
    probabilities: np.ndarray
    embedding: np.ndarray
    #: A small JPEG of the image, when ``classify`` was asked for thumbnails.
    thumbnail: bytes | None = None


def session_options(threads: int) -> Any:
    """onnxruntime options for a session that shares its cores with a decode pool.

    Idle intra-op threads spin for ``SPIN_MICROSECONDS``, then sleep. Inside a run, one
    operator follows the other within less than that, so the run's threads stay awake through
    it; between runs the pause is longer, and the decode pool gets the cores. Spinning without
    a bound (onnxruntime's default) took those cores: on a loaded 2-core machine, in one run,
    classify went from 0.83x of a bare session on ready tensors to 1.58x once the threads
    stopped spinning. Never spinning costs a wake-up per parallel operator instead: on a
    quiet 2-core machine, 3 runs each, the model alone ran 206-212 images/s never spinning and
    211-216 spinning up to 50 us, and ``classify`` 0.846-0.866x of the bare session against
    0.875-0.889x.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.intra_op.spin_duration_us",
                                     str(SPIN_MICROSECONDS))
    return options


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
        self.provider: str | None = None
        #: The session's input: uint8 pixels, normalized inside the graph (``folding``).
        self.feed = ""
        self.lock = threading.Lock()


class Classifier:
    """One lazily created, warmed-up onnxruntime session shared by every caller.

    ``classify`` may be called from many threads (a worker serves several requests at once).
    Callers take turns, in arrival order, at blocks of ``batch_size`` images: within a turn
    the block decodes on a small pool while the model runs on its first images (one run
    already uses every core, through intra-op threads). Interleaving callers more finely, run
    by run with each decoding ahead for itself, cost 8-10% of throughput on a 2-core machine
    (two threads classifying 64-image pieces against one thread classifying them in turn,
    same images, same run); a block of 32 keeps a caller's wait behind another to one block.
    """

    def __init__(self, info: ModelInfo, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 run_batch: int = DEFAULT_RUN_BATCH, threads: int | None = None,
                 limits: DecodeLimits = DecodeLimits(), device: str = "cpu") -> None:
        if batch_size < 1 or run_batch < 1:
            raise ValueError("batch_size and run_batch must be >= 1")
        providers_for(device, ())  # an unknown device fails here, not at first use
        self.info = info
        self.device = device
        self.batch_size = batch_size
        self.run_batch = run_batch
        self.threads = threads or default_threads()
        self.limits = limits
        self._slot = _SessionSlot()
        self._run_lock = threading.Lock()
        self._turns = Turns()
        self._decoder = ThreadPoolExecutor(max_workers=self.threads,
                                           thread_name_prefix="vgi-decode")

    @property
    def session(self):
        """The onnxruntime session, created (after a checksum check) on first use."""
        slot = self._slot
        if slot.session is None:
            with slot.lock:
                if slot.session is None:
                    slot.session = self._create_session()
        return slot.session

    @property
    def provider(self) -> str:
        """The execution provider the session runs on (creating the session if need be)."""
        if self._slot.provider is None:
            self.session  # noqa: B018 - creating the session is what picks the provider
        assert self._slot.provider is not None
        return self._slot.provider

    def with_limits(self, limits: DecodeLimits) -> Classifier:
        """This classifier with other decode limits, sharing its session, locks and decode pool.

        A process holds one classifier per model (``load_classifier``): a second onnxruntime
        session would double the memory and fight the first over the cores. A worker's own
        ``--max-image-mb`` / ``--max-pixels`` are applied through a view made here.
        """
        view = copy.copy(self)
        view.limits = limits
        return view

    def _create_session(self):
        import onnxruntime as ort

        info = self.info
        verify_sha256(info.onnx_file, info.sha256)
        providers = providers_for(self.device, ort.get_available_providers())
        options = session_options(self.threads)
        try:
            session = ort.InferenceSession(str(info.onnx_file), sess_options=options,
                                           providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {info.onnx_file}: {exc}") from exc
        self._slot.provider = check_provider(self.device, session.get_providers())
        check_graph(info, session)  # the graph as shipped matches its metadata
        folded, self._slot.feed = folded_model(info.onnx_file, info.input_name, info.layout,
                                               info.prep.size, info.mean, info.std)
        del session
        try:
            return ort.InferenceSession(folded, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime cannot load {info.onnx_file} with its "
                             f"normalization folded in: {exc}") from exc

    def warm_up(self) -> None:
        """Create the session and run one batch so the first real query is not the slow one."""
        size = self.info.prep.size
        self.run(np.zeros((1, size, size, 3), dtype=np.uint8))

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on ``N x H x W x 3`` uint8 pixels: (probabilities, unit embeddings).

        The pixels are fed as they are: the graph normalizes them itself (``folding``).
        """
        batch = np.ascontiguousarray(pixels, dtype=np.uint8)
        session = self.session
        feed = self._slot.feed
        names = [self.info.logits_output]
        if self.info.embedding_output:
            names.append(self.info.embedding_output)
        outputs = []
        with self._run_lock:
            for start in range(0, len(batch), self.run_batch):
                outputs.append(session.run(names, {feed: batch[start:start + self.run_batch]}))
        logits = np.concatenate([o[0] for o in outputs])
        if not self.info.embedding_output:
            return softmax(logits), np.zeros((len(logits), 0), dtype=np.float32)
        embedding = np.concatenate([o[1] for o in outputs])
        return softmax(logits), l2_normalize(embedding)

    def decode(self, source: ImageSource) -> np.ndarray | None:
        return decode(source, self.limits, self.info.prep)

    def classify(self, sources: Sequence[ImageSource], top_k: int = DEFAULT_TOP_K,
                 thumbnails: bool = False) -> list[Classification | None]:
        """Classify every source; ``None`` where an image could not be decoded.

        With ``thumbnails`` each result also carries a small JPEG of its image, made on the
        decode pool from the pixels decoded for the model.
        """
        top_k = validate_top_k(top_k, self.info.num_classes)
        results: list[Classification | None] = [None] * len(sources)
        block_size = max(self.batch_size, self.run_batch)  # runs stay full within a block
        for first in range(0, len(sources), block_size):
            block = sources[first:first + block_size]
            with self._turns.held():
                for rows, decoded in self._decoded_runs(block, thumbnails):
                    probabilities, embeddings = self.run(np.stack([d.pixels for d in decoded]))
                    indices = top_k_indices(probabilities, top_k)
                    for i, (row, image) in enumerate(zip(rows, decoded, strict=True)):
                        results[first + row] = Classification(
                            indices=indices[i], probabilities=probabilities[i, indices[i]],
                            embedding=embeddings[i], thumbnail=image.thumbnail)
        return results

    def _decoded_runs(self, block: Sequence[ImageSource], thumbnails: bool
                      ) -> Iterator[tuple[list[int], list[Decoded]]]:
        """The decodable images of one block, ``run_batch`` at a time in order, with their
        rows in the block.

        The whole block is handed to the decode pool at once and the model starts as soon as
        its first run's images are ready, so the decoding of the rest overlaps the runs.
        Undecodable images are skipped, so every run but the last is full.
        """
        decode_one = functools.partial(decode_image, limits=self.limits, prep=self.info.prep,
                                       thumbnail=thumbnails)
        futures = [self._decoder.submit(decode_one, source) for source in block]
        rows: list[int] = []
        decoded: list[Decoded] = []
        try:
            for row, future in enumerate(futures):
                image = future.result()
                if image is not None:
                    rows.append(row)
                    decoded.append(image)
                if len(decoded) == self.run_batch:
                    yield rows, decoded
                    rows, decoded = [], []
            if decoded:
                yield rows, decoded
        finally:  # the caller stopped early (an error): decode nothing more for it
            for future in futures:
                future.cancel()


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


def load_classifier(model: str = DEFAULT_MODEL, device: str = "cpu",
                    threads: int | None = None) -> Classifier:
    """The process-wide classifier for a shipped model's name or a model directory (one
    onnxruntime session per model, device and thread count per process). ``threads``: the
    cores it may use, e.g. those an engine gave one actor (None: every core of the process)."""
    return _load_classifier(resolve_model(model), device, threads)


@functools.cache
def _load_classifier(directory: Path, device: str, threads: int | None) -> Classifier:
    return Classifier(ModelInfo.load(directory), device=device, threads=threads)

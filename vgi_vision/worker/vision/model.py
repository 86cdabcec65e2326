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
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vgi_vision.errors import ModelError, VgiVisionError
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.folding import folded_model
from vgi_vision.worker.vision.imaging import ImageSource, decode, decode_image
from vgi_vision.worker.vision.model_files import (
    DEFAULT_MODEL,
    ModelInfo,
    check_graph,
    models_root,
    resolve_model,
    verify_sha256,
)
from vgi_vision.worker.vision.providers import check_provider, providers_for

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
#: Images one caller keeps queued for the lanes: enough that a lane never waits for the caller
#: between runs, few enough that another caller's images wait behind at most this many.
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
    """One lazily created, warmed-up onnxruntime session shared by every caller, run on lanes.

    A lane is a thread per core that takes ``run_batch`` images, decodes them and runs the
    model on them, all on that one core: the session has a single intra-op thread and
    onnxruntime runs several calls of one session at once. One run spread over every core
    instead (intra-op threads) waits at each operator for its slowest thread, so any other
    work on the machine, the decoding of the next images included, stalls all of its cores:
    on a 2-core machine, in the same run, a first sketch of two lanes classified JPEGs at
    0.91x of a bare 2-thread session on ready tensors (median of 12 rounds) against 0.86x for
    that session fed by a decode pool, and the bare model itself ran 1.4x faster as two
    one-thread runs at once than as one 2-thread run while the machine was busy.

    ``classify`` may be called from many threads (a worker serves several requests at once).
    The lanes take runs in the order they were queued, and each caller keeps at most
    ``batch_size`` images queued, so a caller waits behind at most that many of each other.
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
        self._lanes = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="vgi-lane")

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
        """This classifier with other decode limits, sharing its session and lanes.

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
        # On the CPU a run keeps to its lane's core; another device runs the whole model
        # itself, and its few host-side operators may use every core.
        options = session_options(1 if self.device == "cpu" else self.threads)
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
        """Create the session and run a full batch on every lane at once, so the first real
        query is not the slow one (each concurrent run needs working memory of its own)."""
        size = self.info.prep.size
        zeros = np.zeros((self.run_batch, size, size, 3), dtype=np.uint8)
        self.session  # noqa: B018 - created once, before the lanes race to it
        list(self._lanes.map(self.run, [zeros] * self.threads))

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on ``N x H x W x 3`` uint8 pixels: (probabilities, unit embeddings).

        The pixels are fed as they are: the graph normalizes them itself (``folding``). Up to
        ``run_batch`` images run on the calling thread (a lane calls it so); more are split
        into runs of ``run_batch`` on the lanes. Safe to call from many threads at once.
        """
        batch = np.ascontiguousarray(pixels, dtype=np.uint8)
        step = self.run_batch
        if len(batch) <= step:
            outputs = [self._run_once(batch)]
        else:
            outputs = list(self._lanes.map(self._run_once, [batch[start:start + step]
                                                            for start in range(0, len(batch),
                                                                               step)]))
        logits = np.concatenate([o[0] for o in outputs])
        if not self.info.embedding_output:
            return softmax(logits), np.zeros((len(logits), 0), dtype=np.float32)
        embedding = np.concatenate([o[1] for o in outputs])
        return softmax(logits), l2_normalize(embedding)

    def _run_once(self, batch: np.ndarray) -> list[np.ndarray]:
        """One onnxruntime run on the calling thread: logits, then the embedding if any."""
        names = [self.info.logits_output]
        if self.info.embedding_output:
            names.append(self.info.embedding_output)
        session = self.session
        return session.run(names, {self._slot.feed: batch})

    def decode(self, source: ImageSource) -> np.ndarray | None:
        return decode(source, self.limits, self.info.prep)

    def classify(self, sources: Sequence[ImageSource], top_k: int = DEFAULT_TOP_K,
                 thumbnails: bool = False) -> list[Classification | None]:
        """Classify every source; ``None`` where an image could not be decoded.

        With ``thumbnails`` each result also carries a small JPEG of its image, made on the
        lanes from the pixels decoded for the model.
        """
        top_k = validate_top_k(top_k, self.info.num_classes)
        results: list[Classification | None] = [None] * len(sources)
        step = self.run_batch
        queued_runs = max(1, -(-self.batch_size // step))
        classify_run = functools.partial(self._classify_run, top_k=top_k, thumbnails=thumbnails)
        pending: deque[tuple[int, Future[list[tuple[int, Classification]]]]] = deque()
        try:
            for first in range(0, len(sources), step):
                pending.append((first, self._lanes.submit(classify_run,
                                                          sources[first:first + step])))
                all_queued = first + step >= len(sources)
                while pending and (all_queued or len(pending) > queued_runs):
                    offset, future = pending.popleft()
                    for row, result in future.result():
                        results[offset + row] = result
        finally:  # the caller stopped early (an error): nothing more is run for it
            for _, future in pending:
                future.cancel()
        return results

    def _classify_run(self, sources: Sequence[ImageSource], top_k: int, thumbnails: bool
                      ) -> list[tuple[int, Classification]]:
        """One lane's work: decode ``sources`` and run the model on those that decoded, on
        this thread. Returns (row in ``sources``, result) for each decoded image."""
        decoded = [(row, image) for row, source in enumerate(sources)
                   if (image := decode_image(source, self.limits, self.info.prep,
                                             thumbnail=thumbnails)) is not None]
        if not decoded:
            return []
        probabilities, embeddings = self.run(np.stack([image.pixels for _, image in decoded]))
        indices = top_k_indices(probabilities, top_k)
        return [(row, Classification(indices=indices[i],
                                     probabilities=probabilities[i, indices[i]],
                                     embedding=embeddings[i], thumbnail=image.thumbnail))
                for i, (row, image) in enumerate(decoded)]


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

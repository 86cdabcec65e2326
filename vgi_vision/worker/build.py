"""Assembling a worker: model, path policy, optional write-back and the registry.

The transport decides the path policy: a subprocess worker belongs to its caller and reads
what the caller can (so does an in-process worker), while socket and HTTP workers only read
under ``--data-root``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from vgi_vision import __version__
from vgi_vision.errors import ModelError
from vgi_vision.worker.dispatcher import Dispatcher, ServerLimits
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.writeback import DEFAULT_MAX_IN_FLIGHT, WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.tokens import DEFAULT_TTL_SECONDS
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import load_object_detector
from vgi_vision.worker.vision.detector_files import OBJECT_DETECTOR
from vgi_vision.worker.vision.model import DEFAULT_MODEL, Classifier, load_classifier

log = logging.getLogger(__name__)

#: How long a stopping worker waits for the requests in flight to be answered.
DRAIN_SECONDS = 120.0


@dataclass(frozen=True)
class WorkerConfig:
    transport: str = "stdio"  # "stdio" | "unix" | "http" | "inprocess"
    model: str = DEFAULT_MODEL  # a shipped model's name or a model directory
    detector: str = OBJECT_DETECTOR  # a shipped object detector's name or its directory
    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    threads: int | None = None  # onnxruntime and decode threads; None: the cores we may use
    data_root: str | Sequence[str] | None = None  # a folder and/or object URL prefixes
    limits: ServerLimits = ServerLimits()
    decode_limits: DecodeLimits = DecodeLimits()  # per image: --max-image-mb, --max-pixels
    lance: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    lance_recovery_grace: float = 0.0
    token_ttl: int = DEFAULT_TTL_SECONDS  # HTTP scans continue within it; staged rows expire
    warm_up: bool = True


@dataclass
class Worker:
    """A dispatcher and the resources it owns; ``close`` drains requests, then write-back."""

    dispatcher: Dispatcher
    sink: WriteBack | None = None

    def close(self) -> None:
        """Answer the requests in flight (new ones are refused), then flush write-back.

        Closing the store under a request still writing would fail it half-way, and exiting
        with threads inside onnxruntime or LanceDB aborts the process.
        """
        if not self.dispatcher.drain(DRAIN_SECONDS):
            log.warning("requests still running after %.0f s; stopping anyway", DRAIN_SECONDS)
        if self.sink is not None:
            self.sink.close()


def build_worker(config: WorkerConfig) -> Worker:
    objects = functools.partial(load_object_detector, config.detector)
    if config.detector != OBJECT_DETECTOR:
        objects()  # a directory of one's own is checked first, so a bad one fails the start
    classifier = load_classifier(config.model, config.device, config.threads)
    classifier = classifier.with_limits(config.decode_limits)
    # The session is created (and the model checked against its metadata) now, so a bad
    # model or device fails the start, not the first query; warming up also runs it once.
    if config.warm_up:
        classifier.warm_up()
    log.info("model %s (%s) on %s", classifier.info.name, classifier.info.precision,
             classifier.provider)
    embedding_dim = classifier.info.embedding_dim
    if config.lance and not embedding_dim:
        raise ModelError(f"write-back stores image embeddings, but model "
                         f"{classifier.info.name} has no embedding output "
                         f"(outputs.embedding in its metadata.json)")
    if config.transport in ("stdio", "inprocess") and config.data_root is None:
        paths = PathPolicy.unrestricted()
    else:
        paths = PathPolicy.confined(config.data_root)
    sink = None
    if config.lance:
        try:
            sink = WriteBack(config.lance, embedding_dim, max_in_flight=config.max_in_flight,
                             recovery_grace_seconds=config.lance_recovery_grace,
                             staged_lifetime_seconds=config.token_ttl)
        except ValueError as exc:  # LanceDB refuses a table whose schema differs
            raise ModelError(f"the write-back store {config.lance} does not fit model "
                             f"{classifier.info.name} (embeddings of {embedding_dim} floats): "
                             f"{exc}; give this model its own --lance URI") from None
    registry = build_registry(VisionContext(classifier=classifier, paths=paths, sink=sink,
                                            objects=objects))
    info = {"version": __version__, "model": classifier.info.name, **model_summary(classifier),
            "pid": os.getpid(), "transport": config.transport, "lance": config.lance,
            # What one request may hold: clients size their sub-batches by these.
            "limits": {"max_request_bytes": config.limits.max_request_bytes,
                       "max_rows_per_call": config.limits.max_rows_per_call,
                       "max_image_bytes": config.decode_limits.max_bytes}}
    log.info("worker ready: %s", info)
    return Worker(Dispatcher(registry, config.limits, worker_info=info), sink)


def model_summary(classifier: Classifier) -> dict[str, object]:
    """What the worker info (``describe`` replies) says about the serving model."""
    info = classifier.info
    return {"model_precision": info.precision, "model_sha256": info.sha256,
            "model_classes": info.num_classes, "device": classifier.device,
            "provider": classifier.provider}

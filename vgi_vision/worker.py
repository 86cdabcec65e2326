"""Assembling a worker: model, path policy, optional write-back and the registry.

The transport decides the path policy: a subprocess worker belongs to its caller and reads
what the caller can, while socket and HTTP workers only read under ``--data-root``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from vgi_vision import __version__
from vgi_vision.functions import VisionContext, build_registry
from vgi_vision.imaging import DecodeLimits
from vgi_vision.lance.writeback import DEFAULT_MAX_IN_FLIGHT, WriteBack
from vgi_vision.model import DEFAULT_MODEL, load_classifier
from vgi_vision.paths import PathPolicy
from vgi_vision.server import Dispatcher, ServerLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    transport: str = "stdio"  # "stdio" | "unix" | "http"
    model: str = DEFAULT_MODEL
    data_root: str | None = None
    limits: ServerLimits = ServerLimits()
    decode_limits: DecodeLimits = DecodeLimits()  # per image: --max-image-mb, --max-pixels
    lance: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    lance_recovery_grace: float = 0.0
    warm_up: bool = True


@dataclass
class Worker:
    """A dispatcher and the resources it owns; ``close`` drains write-back."""

    dispatcher: Dispatcher
    sink: WriteBack | None = None

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def build_worker(config: WorkerConfig) -> Worker:
    classifier = load_classifier(config.model).with_limits(config.decode_limits)
    if config.warm_up:
        classifier.warm_up()  # the first query should not pay for session creation
    if config.transport == "stdio" and config.data_root is None:
        paths = PathPolicy.unrestricted()
    else:
        paths = PathPolicy.confined(config.data_root)
    sink = WriteBack(config.lance, classifier.info.embedding_dim,
                     max_in_flight=config.max_in_flight,
                     recovery_grace_seconds=config.lance_recovery_grace) if config.lance else None
    registry = build_registry(VisionContext(classifier=classifier, paths=paths, sink=sink))
    info = {"version": __version__, "model": classifier.info.name, "pid": os.getpid(),
            "transport": config.transport, "lance": config.lance,
            # What one request may hold: clients size their sub-batches by these.
            "limits": {"max_request_bytes": config.limits.max_request_bytes,
                       "max_rows_per_call": config.limits.max_rows_per_call,
                       "max_image_bytes": config.decode_limits.max_bytes}}
    log.info("worker ready: %s", info)
    return Worker(Dispatcher(registry, config.limits, worker_info=info), sink)

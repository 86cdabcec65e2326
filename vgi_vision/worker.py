"""Assembling a worker: model, path policy and registry behind one dispatcher.

The transport decides the path policy: a subprocess worker belongs to its caller and reads
what the caller can, while socket and HTTP workers only read under ``--data-root``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from vgi_vision import __version__
from vgi_vision.functions import VisionContext, build_registry
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
    warm_up: bool = True


def build_dispatcher(config: WorkerConfig) -> Dispatcher:
    classifier = load_classifier(config.model)
    if config.warm_up:
        classifier.warm_up()  # the first query should not pay for session creation
    if config.transport == "stdio" and config.data_root is None:
        paths = PathPolicy.unrestricted()
    else:
        paths = PathPolicy.confined(config.data_root)
    registry = build_registry(VisionContext(classifier=classifier, paths=paths))
    info = {"version": __version__, "model": classifier.info.name, "pid": os.getpid(),
            "transport": config.transport}
    log.info("worker ready: %s", info)
    return Dispatcher(registry, config.limits, worker_info=info)

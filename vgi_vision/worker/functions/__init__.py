"""The vision functions, one module per SQL function: no transport code lives here.

Each module declares its function's ``FunctionSpec`` (overloads with bounded parameters,
columns, description, example) in a ``spec(ctx)`` next to the implementation; what several
functions share lives in :mod:`vgi_vision.worker.calls`, and function modules never import
one another. ``build_registry`` only lists the modules, wiring them to a classifier and a path
policy (and, when write-back is on, a LanceDB sink), so one worker process can serve them over
any transport.
"""

from __future__ import annotations

from collections.abc import Callable

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.functions import (
    categories,
    category_score,
    classify,
    count_faces,
    count_objects,
    detect,
    duplicates,
    embed,
    faces,
    image_classes,
    image_info,
    is_a,
    models,
    ocr,
    ocr_text,
    phash,
    predictions,
    similar,
    stored_objects,
    stored_text,
    top_label,
)
from vgi_vision.worker.registry import FunctionSpec, Registry

__all__ = ["FUNCTIONS", "VisionContext", "build_registry"]

#: Every function a worker serves, in catalog order; a spec of None is left out (``embed``
#: for a model without an embedding output).
FUNCTIONS: tuple[Callable[[VisionContext], FunctionSpec | None], ...] = (
    classify.spec,
    top_label.spec,
    image_classes.spec,
    predictions.spec,
    similar.spec,
    duplicates.spec,
    models.spec,
    embed.spec,
    image_info.spec,
    phash.spec,
    categories.spec,
    category_score.spec,
    is_a.spec,
    ocr.spec,
    ocr_text.spec,
    stored_text.spec,
    detect.spec,
    count_objects.spec,
    faces.spec,
    count_faces.spec,
    stored_objects.spec,
)


def build_registry(ctx: VisionContext) -> Registry:
    registry = Registry()
    for declare in FUNCTIONS:
        spec = declare(ctx)
        if spec is not None:
            registry.add(spec)
    return registry

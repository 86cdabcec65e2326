"""The vision functions, declared on a registry: no transport code lives here.

``build_registry`` wires the functions to a classifier and a path policy (and, when write-back
is on, a LanceDB sink), so one worker process can serve them over any transport.
"""

from __future__ import annotations

from vgi_vision.worker.functions import categories, facts, ocr
from vgi_vision.worker.functions.classify import CLASSIFY_COLUMNS, Classify, ImageClasses, top_label
from vgi_vision.worker.functions.common import (
    DEFAULT_TOP_K,
    IMAGES_PER_TICK,
    VisionContext,
    image_overloads,
)
from vgi_vision.worker.functions.models import MODEL_COLUMNS, Models
from vgi_vision.worker.functions.stored import PREDICTION_COLUMNS, Predictions, Similar
from vgi_vision.worker.registry import Column, FunctionSpec, Overload, Param, Registry

__all__ = ["VisionContext", "build_registry"]


def build_registry(ctx: VisionContext) -> Registry:
    registry = Registry()
    top_k = Param("top_k", "INTEGER", DEFAULT_TOP_K,
                  "how many classes per image, 1..the model's class count")
    registry.add(FunctionSpec(
        name="classify",
        kind="table",
        overloads=image_overloads(top_k),
        columns=CLASSIFY_COLUMNS,
        description="Classify images with the serving model (vision.models()): the top_k "
                    "most likely classes per image, most likely first. NULL or undecodable "
                    "images give no rows.",
        example="SELECT * FROM vision.classify('test/sql/data/coffee.png', top_k := 3)",
        impl=Classify(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    ))
    registry.add(FunctionSpec(
        name="top_label",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("label", "VARCHAR", "the most likely class, NULL if no prediction"),),
        description="The most likely class label of an image (serving model); NULL when "
                    "the image is NULL or cannot be decoded.",
        example="SELECT vision.top_label('test/sql/data/coffee.png')",
        impl=top_label(ctx),
        input_rows_per_call=256,
    ))
    registry.add(FunctionSpec(
        name="image_classes",
        kind="table",
        overloads=(Overload(()),),
        columns=(Column("idx", "INTEGER", "class index, 0..classes-1"),
                 Column("label", "VARCHAR", "human-readable class name, unique"),
                 Column("wnid", "VARCHAR", "WordNet id"),
                 Column("ancestors", "VARCHAR[]",
                        "names of the WordNet categories above the class, nearest first; "
                        "NULL if the model ships no categories"),
                 Column("ancestor_wnids", "VARCHAR[]", "their WordNet ids, in the same order")),
        description="The classes the serving model predicts, by index (the 1000 ImageNet "
                    "classes for the shipped models), with the WordNet categories above each.",
        example="SELECT * FROM vision.image_classes() WHERE label LIKE '%cat%'",
        impl=ImageClasses(ctx),
        input_rows_per_call=1,
    ))
    registry.add(FunctionSpec(
        name="predictions",
        kind="table",
        overloads=(Overload(()),),
        columns=PREDICTION_COLUMNS,
        description="Every prediction stored by write-back (a worker started with --lance), "
                    "one row per image and rank; each image is stored once per model (with "
                    "the most ranks it was classified with), and only completed runs are "
                    "visible.",
        example="SELECT label, count(*) FROM vision.predictions() WHERE rank = 1 GROUP BY label",
        impl=Predictions(ctx),
        input_rows_per_call=1,
    ))
    registry.add(FunctionSpec(
        name="similar",
        kind="table",
        overloads=image_overloads(Param("k", "INTEGER", DEFAULT_TOP_K,
                                        "how many stored images to return, 1..1000")),
        columns=(Column("rank", "INTEGER", "1 for the nearest stored image"),
                 Column("image_key", "VARCHAR", "sha256 of the stored image's bytes"),
                 Column("path", "VARCHAR", "stored path, if it was classified by path"),
                 Column("label", "VARCHAR", "the stored image's top label"),
                 Column("confidence", "DOUBLE", "the stored top label's confidence"),
                 Column("distance", "DOUBLE", "cosine distance of the embeddings, 0 = same")),
        description="The stored images (from write-back) most similar to an image, by the "
                    "cosine distance of their model embeddings.",
        example="SELECT * FROM vision.similar('test/sql/data/cat.png', k := 3)",
        impl=Similar(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    ))
    registry.add(FunctionSpec(
        name="models",
        kind="table",
        overloads=(Overload(()),),
        columns=MODEL_COLUMNS,
        description="The models this worker can load (the shipped ones, and a model "
                    "directory it was started with) and which one is serving, with its "
                    "execution provider.",
        example="SELECT name, precision, classes, serving, provider FROM vision.models()",
        impl=Models(ctx),
        input_rows_per_call=1,
    ))
    facts.register(registry, ctx)
    categories.register(registry, ctx)
    ocr.register(registry, ctx)
    return registry

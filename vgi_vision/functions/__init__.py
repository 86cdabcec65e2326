"""The vision functions, declared on a registry: no transport code lives here.

``build_registry`` wires the functions to a classifier and a path policy (and, when write-back
is on, a LanceDB sink), so one worker process can serve them over any transport.
"""

from __future__ import annotations

from vgi_vision.functions.classify import CLASSIFY_COLUMNS, Classify, ImageClasses, top_label
from vgi_vision.functions.common import (
    DEFAULT_TOP_K,
    IMAGES_PER_TICK,
    VisionContext,
    image_overloads,
)
from vgi_vision.functions.ocr import OCR_COLUMNS, OCR_ROWS_PER_CALL, Ocr, ocr_text
from vgi_vision.functions.stored import PREDICTION_COLUMNS, Predictions, Similar
from vgi_vision.ocr import DEFAULT_MIN_CONFIDENCE
from vgi_vision.registry import Column, FunctionSpec, Overload, Param, Registry

__all__ = ["VisionContext", "build_registry"]


def build_registry(ctx: VisionContext) -> Registry:
    registry = Registry()
    top_k = Param("top_k", "INTEGER", DEFAULT_TOP_K, "how many classes per image, 1..1000")
    registry.add(FunctionSpec(
        name="classify",
        kind="table",
        overloads=image_overloads(top_k),
        columns=CLASSIFY_COLUMNS,
        description="Classify images into the 1000 ImageNet classes: the top_k most likely "
                    "classes per image, most likely first. NULL or undecodable images give "
                    "no rows.",
        example="SELECT * FROM vision.classify('test/sql/data/coffee.png', top_k := 3)",
        impl=Classify(ctx),
        input_rows_per_call=IMAGES_PER_TICK,
    ))
    registry.add(FunctionSpec(
        name="top_label",
        kind="scalar",
        overloads=image_overloads(),
        columns=(Column("label", "VARCHAR", "the most likely class, NULL if no prediction"),),
        description="The most likely ImageNet class label of an image; NULL when the image "
                    "is NULL or cannot be decoded.",
        example="SELECT vision.top_label('test/sql/data/coffee.png')",
        impl=top_label(ctx),
        input_rows_per_call=256,
    ))
    registry.add(FunctionSpec(
        name="image_classes",
        kind="table",
        overloads=(Overload(()),),
        columns=(Column("idx", "INTEGER", "class index, 0..999"),
                 Column("label", "VARCHAR", "human-readable class name, unique"),
                 Column("wnid", "VARCHAR", "WordNet id")),
        description="The 1000 ImageNet classes the model predicts, by index.",
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
                    "one row per image and rank; only completed runs are visible.",
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
    min_confidence = Param("min_confidence", "DOUBLE", DEFAULT_MIN_CONFIDENCE,
                           "lines recognized with less confidence are left out, 0..1")
    registry.add(FunctionSpec(
        name="ocr",
        kind="table",
        overloads=image_overloads(min_confidence),
        columns=OCR_COLUMNS,
        description="Read the text in images (PP-OCR models, offline): one row per line in "
                    "reading order, with its confidence and box in pixels of the upright "
                    "image. NULL, undecodable or textless images give no rows. Needs "
                    "vgi-vision[ocr].",
        example="SELECT line, text FROM vision.ocr('test/sql/text/invoice.png')",
        impl=Ocr(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    ))
    registry.add(FunctionSpec(
        name="ocr_text",
        kind="scalar",
        overloads=image_overloads(min_confidence),
        columns=(Column("text", "VARCHAR", "the lines in reading order, joined by newlines; "
                                           "NULL when no text is found"),),
        description="All the text in an image as one string, lines in reading order joined "
                    "by newlines; NULL when there is none. Needs vgi-vision[ocr].",
        example="SELECT vision.ocr_text('test/sql/text/invoice.png')",
        impl=ocr_text(ctx),
        input_rows_per_call=OCR_ROWS_PER_CALL,
    ))
    return registry

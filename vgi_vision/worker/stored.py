"""What write-back stores: the columns of stored results and the LanceDB schemas built on them.

The SQL functions that return stored results (``classify``, ``ocr``, ``detect``, ``faces``,
``predictions``, ``stored_text``, ``stored_objects``, ``embed``) and the tables that keep
them (:mod:`vgi_vision.worker.lance`) both take their columns from here, so what a function
returns and what the store holds are declared once and cannot drift apart; neither side
imports the other to learn them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from vgi_vision.protocol import arrow_type
from vgi_vision.worker.registry import Column

CLASSIFY_COLUMNS = (
    Column("rank", "INTEGER", "1 for the most likely class, then 2, 3, ..."),
    Column("idx", "INTEGER", "class index, 0..999 for the shipped ImageNet-1k models"),
    Column("label", "VARCHAR", "human-readable class name, unique across the model's classes"),
    Column("wnid", "VARCHAR", "WordNet id of the class, e.g. n07920052 (NULL if the model's "
                              "labels have none)"),
    Column("confidence", "DOUBLE", "softmax probability in [0, 1], descending by rank"),
)

PREDICTION_COLUMNS = (
    Column("image_key", "VARCHAR", "sha256 of the image bytes"),
    Column("path", "VARCHAR", "the path given, for the path overloads; else NULL"),
    Column("paths", "VARCHAR[]", "every path the image was stored from, by any run and "
                                 "model, first seen first (copies under other names too)"),
    Column("model", "VARCHAR", "model that made the prediction"),
    Column("rank", "INTEGER", "1 for the most likely class"),
    Column("idx", "INTEGER", "ImageNet-1k class index"),
    Column("label", "VARCHAR", "class label"),
    Column("confidence", "DOUBLE", "softmax probability"),
    Column("run_id", "VARCHAR", "the call that stored the row; a run is stored all or nothing"),
    Column("created_at", "TIMESTAMP", "when the row was written (UTC)"),
)

OCR_COLUMNS = (
    Column("line", "INTEGER", "1 for the first line in reading order (top to bottom, then "
                              "left to right), then 2, 3, ..."),
    Column("text", "VARCHAR", "the recognized text of the line"),
    Column("confidence", "DOUBLE", "recognition confidence in [0, 1]"),
    Column("x0", "INTEGER", "left edge of the line's box, in pixels of the upright image"),
    Column("y0", "INTEGER", "top edge of the box"),
    Column("x1", "INTEGER", "right edge of the box"),
    Column("y1", "INTEGER", "bottom edge of the box"),
)

STORED_TEXT_COLUMNS = (
    Column("image_key", "VARCHAR", "sha256 of the image bytes"),
    Column("path", "VARCHAR", "the path given, for the path overloads; else NULL"),
    Column("model", "VARCHAR", "the OCR model that read the text"),
    *OCR_COLUMNS,
    Column("min_confidence", "DOUBLE", "the min_confidence the image was read with"),
    Column("run_id", "VARCHAR", "the call that stored the image; a run is stored all or nothing"),
    Column("created_at", "TIMESTAMP", "when the image was stored (UTC)"),
)


BOX_COLUMNS = (
    Column("score", "DOUBLE", "the detector's confidence in [0, 1]"),
    Column("x0", "INTEGER", "left edge of the box, in pixels of the image as displayed "
                            "(EXIF orientation applied)"),
    Column("y0", "INTEGER", "top edge of the box"),
    Column("x1", "INTEGER", "right edge of the box"),
    Column("y1", "INTEGER", "bottom edge of the box"),
)

OBJECT_COLUMNS = (
    Column("object", "INTEGER", "1 for the highest-scored object of the image, then 2, 3, ..."),
    Column("label", "VARCHAR", "the object's class (one of COCO's 80)"),
    *BOX_COLUMNS,
)

FACE_COLUMNS = (
    Column("face", "INTEGER", "1 for the highest-scored face of the image, then 2, 3, ..."),
    *BOX_COLUMNS,
)

STORED_OBJECT_COLUMNS = (
    Column("image_key", "VARCHAR", "sha256 of the image bytes"),
    Column("path", "VARCHAR", "the path given, for the path overloads; else NULL"),
    Column("model", "VARCHAR", "the detector that found the object: the object detector's "
                               "name, or the face detectors' names joined by '+'"),
    Column("object", "INTEGER", "1 for the highest-scored detection of the image and model, "
                                "then 2, 3, ..."),
    Column("label", "VARCHAR", "the object's class; 'face' for a face"),
    *BOX_COLUMNS,
    Column("width", "INTEGER", "the image's width as displayed (EXIF orientation applied): "
                               "the boxes are in its pixels"),
    Column("height", "INTEGER", "the image's height as displayed"),
    Column("min_score", "DOUBLE", "the min_score the image was searched with"),
    Column("run_id", "VARCHAR", "the call that stored the image; a run is stored all or nothing"),
    Column("created_at", "TIMESTAMP", "when the image was stored (UTC)"),
)


def embedding_type(dim: int) -> str:
    """The SQL type of an embedding of ``dim`` floats (also the stored ``vector`` column)."""
    return f"FLOAT[{dim}]"


#: The identity of a stored result: the image's content hash and the model that classified it.
IMAGE_IDENTITY = ["image_key", "model"]
#: The identity of a stored path: the image's content hash and one path it was stored from.
PATH_IDENTITY = ["image_key", "path"]

#: A small JPEG per stored image (see :func:`vgi_vision.worker.vision.imaging.jpeg_thumbnail`), so a
#: gallery can show images classified from BLOBs. NULL in rows written before it existed.
THUMBNAIL_FIELD = pa.field("thumbnail", pa.binary())
#: The image's 64-bit perceptual hash (what ``phash()`` returns), so ``duplicates()`` finds
#: near-identical pictures without reading them again. NULL in rows written before it existed.
PHASH_FIELD = pa.field("phash", pa.uint64())

_PRIMARY_KEY = {b"lance-schema:unenforced-primary-key": b"true"}


def _key_fields() -> list[pa.Field]:
    """The identity columns, kept explicit: they are the merge key, not a function's output."""
    return [pa.field(name, pa.string(), nullable=False, metadata=_PRIMARY_KEY)
            for name in IMAGE_IDENTITY]


def _fields(columns: Sequence[Column], *names: str, per: str = "image") -> list[pa.Field]:
    """Stored fields of the function columns ``names``, typed as the columns travel (via
    :func:`~vgi_vision.protocol.sqltypes.arrow_type`): one value per image, or a list of one
    value per rank or line (``per="item"``) so one row holds an image's whole result."""
    by_name = {c.name: c for c in columns}
    types = [arrow_type(by_name[name].type) for name in names]
    return [pa.field(name, pa.list_(t) if per == "item" else t)
            for name, t in zip(names, types, strict=True)]


def image_schema(dim: int) -> pa.Schema:
    """Columns of ``images``: one stored image per (image_key, model), its ranked classes as
    lists of ``classify``'s columns, the rest as ``predictions()`` returns them."""
    return pa.schema([
        *_key_fields(),
        *_fields(PREDICTION_COLUMNS, "path"),
        pa.field("top_k", pa.int32()),  # how many ranks the lists hold
        *_fields(CLASSIFY_COLUMNS, "idx", "label", "confidence", per="item"),
        *_fields(PREDICTION_COLUMNS, "run_id", "created_at"),
        pa.field("vector", arrow_type(embedding_type(dim))),  # what embed() returns
        THUMBNAIL_FIELD,
        PHASH_FIELD,
    ])


def ocr_schema() -> pa.Schema:
    """Columns of ``ocr``: the text lines of one image read by one OCR model, in reading order
    (lists of ``ocr``'s columns, like the ranks of ``images``), the rest as
    ``stored_text()`` returns them."""
    return pa.schema([
        *_key_fields(),
        *_fields(STORED_TEXT_COLUMNS, "path", "min_confidence"),
        *_fields(OCR_COLUMNS, "text", "confidence", "x0", "y0", "x1", "y1", per="item"),
        *_fields(STORED_TEXT_COLUMNS, "run_id", "created_at"),
    ])


def objects_schema() -> pa.Schema:
    """Columns of ``objects``: what one detector found in one image, best first (lists of
    ``detect``'s columns, like the lines of ``ocr``), the rest as ``stored_objects()``
    returns them. Faces are rows of the face detector, labelled ``face``."""
    return pa.schema([
        *_key_fields(),
        *_fields(STORED_OBJECT_COLUMNS, "path", "width", "height", "min_score"),
        *_fields(STORED_OBJECT_COLUMNS, "label", "score", "x0", "y0", "x1", "y1", per="item"),
        *_fields(STORED_OBJECT_COLUMNS, "run_id", "created_at"),
    ])


def staged_schema(dim: int) -> pa.Schema:
    """Columns of ``staged``: an image row plus the argument row it answers."""
    return staging(image_schema(dim))


def staging(schema: pa.Schema) -> pa.Schema:
    """A staging table's columns: the stored row's (no key metadata) plus its argument row."""
    plain = [pa.field(f.name, f.type, nullable=f.nullable) for f in schema]
    return pa.schema([*plain, pa.field("input_row", pa.int32())])


def paths_schema() -> pa.Schema:
    """Columns of ``paths``: one row per stored image and path it was stored from, whatever
    the model or result kind, with when a committed run first and last stored it from there
    (UTC). Kept apart from ``images`` so that recording a path is a keyed insert of its own:
    two runs storing the same content from two paths never rewrite each other's row."""
    return pa.schema([
        *[pa.field(name, pa.string(), nullable=False, metadata=_PRIMARY_KEY)
          for name in PATH_IDENTITY],
        pa.field("first_seen", pa.timestamp("us")),
        pa.field("last_seen", pa.timestamp("us")),
    ])


def runs_schema() -> pa.Schema:
    # job_id: the caller's name for the runs of one job (vgi_vision.worker.jobs); NULL for
    # a run requested without one, and in the runs of a store written before jobs existed.
    return pa.schema([("run_id", pa.string()), ("images", pa.int64()),
                      ("committed_at", pa.timestamp("us")), ("job_id", pa.string())])

"""The kinds of stored result and their tables: what the functions need of the store to
write to it and read from it, and what a reader needs to find it. (The tables' columns are
:mod:`vgi_vision.worker.stored`.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from vgi_vision.errors import VgiVisionError

IMAGES = "images"
STAGED = "staged"
OCR = "ocr"
OCR_STAGED = "ocr_staged"
OBJECTS = "objects"
OBJECTS_STAGED = "objects_staged"
RUNS = "runs"
PATHS = "paths"


@dataclass(frozen=True)
class ResultKind:
    """One kind of stored result: the table readers see, the table its runs stage in, and
    which of two rows of the same (image, model) is kept: the one whose ``column`` is larger
    (``larger_wins``) or smaller."""

    table: str
    staged: str
    column: str
    larger_wins: bool

    @property
    def replaces(self) -> str:
        """Merge condition: the new row replaces the stored one."""
        return f"target.{self.column} {'<' if self.larger_wins else '>'} source.{self.column}"


#: Classification keeps the row that ranked more classes; OCR the row that kept more lines
#: (read with a lower min_confidence); detection the row that kept more detections (searched
#: with a lower min_score).
CLASSIFICATION = ResultKind(IMAGES, STAGED, "top_k", larger_wins=True)
TEXT = ResultKind(OCR, OCR_STAGED, "min_confidence", larger_wins=False)
DETECTION = ResultKind(OBJECTS, OBJECTS_STAGED, "min_score", larger_wins=False)
#: Every kind, in the order maintenance visits their tables.
KINDS = (CLASSIFICATION, TEXT, DETECTION)


class RunError(VgiVisionError, RuntimeError):
    """A run could not be made durable; it was rolled back."""


def utc_now() -> datetime:
    """Naive UTC: the tables store UTC timestamps without a zone (DuckDB reads them as is)."""
    return datetime.now(UTC).replace(tzinfo=None)

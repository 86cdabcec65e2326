"""Reading text in images and staging what was read, shared by ``ocr`` and ``ocr_text``."""

from __future__ import annotations

from typing import Any

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.calls.context import VisionContext, image_sources
from vgi_vision.worker.calls.runs import RunState, stage_images
from vgi_vision.worker.lance.kinds import TEXT
from vgi_vision.worker.registry import Args, FunctionError, Param
from vgi_vision.worker.vision.imaging import ImageSource
from vgi_vision.worker.vision.ocr import (
    DEFAULT_MIN_CONFIDENCE,
    MAX_LINES,
    MAX_SECONDS,
    OCR_MODEL,
    OcrUnavailable,
    TextLine,
)

#: Argument rows a client sends per call: more would only be held (or re-sent over HTTP).
OCR_ROWS_PER_CALL = 16

#: What an image's OCR reads at most, said in each OCR function's description.
OCR_BOUNDS = (f"At most {MAX_LINES} lines an image are read (the first in reading order), "
              f"for at most {MAX_SECONDS:g} s an image; the rest are left out.")

MIN_CONFIDENCE_PARAM = Param("min_confidence", "DOUBLE", DEFAULT_MIN_CONFIDENCE,
                             "lines recognized with less confidence are left out",
                             min=0.0, max=1.0)


def read_rows(ctx: VisionContext, args: Args, rows: range, sources: list[ImageSource]
              ) -> list[list[TextLine] | None]:
    """The lines of each argument row in ``rows``; None for NULL, unusable or refused rows."""
    confidences = args["min_confidence"].to_pylist()
    results: list[list[TextLine] | None] = []
    try:
        for row, source in zip(rows, sources, strict=True):
            confidence = confidences[row]
            results.append(None if confidence is None or source is None else
                           ctx.reader.read([source], ctx.classifier.limits, confidence)[0])
    except OcrUnavailable as exc:
        raise FunctionError(str(exc), kind=ErrorKind.NOT_CONFIGURED) from None
    return results


def stage_text(ctx: VisionContext, state: RunState, args: Args, rows: range,
               sources: list[ImageSource], results: list[list[TextLine] | None]) -> None:
    """Stage the lines of one batch of a run's images in LanceDB's ``ocr_staged``, keyed
    like classification write-back by the image's sha256 and the OCR model."""
    confidences = args["min_confidence"].to_pylist()

    def fields(row: int, source: bytes, lines: list[TextLine]) -> dict[str, Any]:
        return {"model": OCR_MODEL, "min_confidence": confidences[row],
                "text": [ln.text for ln in lines],
                "confidence": [ln.confidence for ln in lines],
                **{edge: [getattr(ln, edge) for ln in lines]
                   for edge in ("x0", "y0", "x1", "y1")}}

    stage_images(ctx, state, args, rows, sources, results, TEXT, fields)


def read_and_stage(ctx: VisionContext, state: RunState, args: Args, rows: range
                   ) -> list[list[TextLine] | None]:
    """Read the images of ``rows`` and, with write-back on, stage what was read."""
    sources = image_sources(ctx, args, rows)
    results = read_rows(ctx, args, rows, sources)
    if ctx.sink is not None and rows:
        stage_text(ctx, state, args, rows, sources, results)
    return results

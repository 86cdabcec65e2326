"""Write-back runs: storing one call's results in LanceDB, all or nothing.

Every function that stores results (``classify``, ``top_label``, ``ocr``, ``ocr_text``) makes
its call one run: it stages rows as it goes, then the run commits when the call finishes, or
is rolled back when it fails part-way.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.jobs import current_job
from vgi_vision.worker.lance.kinds import CLASSIFICATION, ResultKind, RunError, utc_now
from vgi_vision.worker.registry import Args, FunctionError
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.facts import perceptual_hash
from vgi_vision.worker.vision.imaging import ImageSource
from vgi_vision.worker.vision.model import Classification


@dataclass
class RunState(CursorState):
    """A cursor over argument rows plus the write-back run the call's results belong to,
    and the job of the request that started it (:mod:`vgi_vision.worker.jobs`; "" for
    none), kept here so continuations commit the run under the same job."""

    kind: ClassVar[str] = "run"
    run_id: str = ""
    images: int = 0
    job_id: str = field(default_factory=current_job)


def write_back(ctx: VisionContext, state: RunState, args: Args, rows: range,
               sources: list[ImageSource], results: list[Classification | None],
               ks: list[int | None]) -> None:
    """Stage one batch of a run's rows in LanceDB (counted before the batch is emitted).

    ``sources`` are the image bytes (``image_sources`` reads files when write-back is on).
    Each row also stores the image's perceptual hash, for ``duplicates()``: a second decode,
    at the hash's 32 px (JPEG draft scale), about a fifteenth of classifying the image
    (docs/performance.md, functions), and bit for bit what ``phash()`` returns.
    A continuation of a run that already committed (a replayed or retried request) writes
    nothing: the stored rows stay exactly as they were.
    """
    store = ctx.store()
    if rows.start and store.committed(state.run_id):
        return
    classifier = ctx.classifier
    is_path = args.overload.params[0].type == "VARCHAR"
    given = args[args.overload.params[0].name].slice(rows.start, len(rows)).to_pylist()
    now = utc_now()
    staged: list[dict[str, Any]] = []
    for row, source, original, result, k in zip(rows, sources, given, results, ks, strict=True):
        if result is None or k is None:
            continue
        assert isinstance(source, bytes)  # image_sources reads files when write-back is on
        idxs = result.indices[:k].tolist()
        staged.append({"image_key": hashlib.sha256(source).hexdigest(),
                       "model": classifier.info.name, "path": original if is_path else None,
                       "top_k": len(idxs), "idx": idxs,
                       "label": [classifier.info.labels[i] for i in idxs],
                       "confidence": result.probabilities[:len(idxs)].tolist(),
                       "run_id": state.run_id, "created_at": now,
                       "vector": result.embedding.tolist(), "thumbnail": result.thumbnail,
                       "phash": perceptual_hash(source, classifier.limits), "input_row": row})
    state.images += len(staged)
    store.write(state.run_id, staged)


@contextlib.contextmanager
def rolled_back_on_error(ctx: VisionContext, state: RunState) -> Iterator[None]:
    """A call that fails part-way (a refused path, a write error) leaves none of its rows."""
    try:
        yield
    except Exception:
        if ctx.sink is not None and state.run_id:
            ctx.sink.abort(state.run_id)
        raise


def finish_run(ctx: VisionContext, state: RunState, kind: ResultKind = CLASSIFICATION
               ) -> None:
    if ctx.sink is None or not state.run_id:
        return
    try:
        ctx.sink.finish(state.run_id, state.images, kind, job_id=state.job_id)
    except RunError as exc:
        raise FunctionError(str(exc), kind=ErrorKind.WRITE_FAILED) from None



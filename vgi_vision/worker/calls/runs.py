"""Write-back runs: storing one call's results in LanceDB, all or nothing.

Every function that stores results (``classify``, ``top_label``, ``ocr``, ``ocr_text``) makes
its call one run: it stages rows as it goes, then the run commits when the call finishes, or
is rolled back when it fails part-way.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.jobs import current_job
from vgi_vision.worker.lance.kinds import CLASSIFICATION, ResultKind, RunError, utc_now
from vgi_vision.worker.registry import Args, FunctionError
from vgi_vision.worker.state import CursorState
from vgi_vision.worker.vision.facts import perceptual_hash
from vgi_vision.worker.vision.imaging import ImageSource
from vgi_vision.worker.vision.model import Classification

T = TypeVar("T")


@dataclass
class RunState(CursorState):
    """A cursor over argument rows plus the write-back run the call's results belong to,
    and the job of the request that started it (:mod:`vgi_vision.worker.jobs`; "" for
    none), kept here so continuations commit the run under the same job."""

    kind: ClassVar[str] = "run"
    run_id: str = ""
    images: int = 0
    job_id: str = field(default_factory=current_job)


def new_run_id(ctx: VisionContext) -> str:
    """The id of a call's write-back run: "" when write-back is off."""
    return uuid.uuid4().hex if ctx.sink else ""


def stage_images(ctx: VisionContext, state: RunState, args: Args, rows: range,
                 sources: list[ImageSource], results: Sequence[T | None], kind: ResultKind,
                 fields: Callable[[int, bytes, T], dict[str, Any]]) -> None:
    """Stage one batch of a run's images in ``kind``'s staged table: one row per image with
    a result (an image where nothing was found too), keyed by the image's sha256 and the
    model that ``fields(row, image bytes, result)`` names with the rest of what it stores.

    ``sources`` are the image bytes (``image_sources`` reads files when write-back is on).
    A continuation of a run that already committed (a replayed or retried request) writes
    nothing: the stored rows stay exactly as they were.
    """
    store = ctx.store()
    if rows.start and store.committed(state.run_id):
        return
    is_path = args.overload.params[0].type == "VARCHAR"
    given = args[args.overload.params[0].name].slice(rows.start, len(rows)).to_pylist()
    now = utc_now()
    staged: list[dict[str, Any]] = []
    for row, source, original, result in zip(rows, sources, given, results, strict=True):
        if result is None:
            continue
        assert isinstance(source, bytes)  # image_sources reads files when write-back is on
        staged.append({"image_key": hashlib.sha256(source).hexdigest(),
                       "path": original if is_path else None, **fields(row, source, result),
                       "run_id": state.run_id, "created_at": now, "input_row": row})
    state.images += len(staged)
    store.write(state.run_id, staged, kind)


def write_back(ctx: VisionContext, state: RunState, args: Args, rows: range,
               sources: list[ImageSource], results: list[Classification | None],
               ks: list[int | None]) -> None:
    """Stage one batch of a run's classifications (counted before the batch is emitted):
    the top ``k`` of each row, NULL ``k`` rows left out.

    Each row also stores the image's perceptual hash, for ``duplicates()``: a second decode,
    at the hash's 32 px (JPEG draft scale), about a fifteenth of classifying the image
    (docs/performance.md, functions), and bit for bit what ``phash()`` returns.
    """
    classifier = ctx.classifier

    def fields(row: int, source: bytes, ranked: tuple[Classification, int]) -> dict[str, Any]:
        result, k = ranked
        idxs = result.indices[:k].tolist()
        return {"model": classifier.info.name, "top_k": len(idxs), "idx": idxs,
                "label": [classifier.info.labels[i] for i in idxs],
                "confidence": result.probabilities[:len(idxs)].tolist(),
                "vector": result.embedding.tolist(), "thumbnail": result.thumbnail,
                "phash": perceptual_hash(source, classifier.limits)}

    ranked = [None if result is None or k is None else (result, k)
              for result, k in zip(results, ks, strict=True)]
    stage_images(ctx, state, args, rows, sources, ranked, CLASSIFICATION, fields)


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



"""Coalesce many small asyncio writes into few batched writes.

LanceDB commits a new table version per ``add``, so one row per call means one manifest, one
data file and one fsync-ish round trip per row. This queue gathers records for a short window
(or until a batch is full) and hands them to a single ``write_batch`` call. It knows nothing
of LanceDB: the sink is any async callable taking a list of records, which keeps the queue
mechanics testable without a database.

Guarantees:

* ``enqueue`` returns a future that completes only after ``write_batch`` returned for the
  batch holding that record (or failed: the future then carries the sink's exception).
* At most ``max_queue_size`` records are accepted but not yet written; further ``enqueue``
  calls wait (back-pressure) rather than growing memory without bound.
* ``stop`` flushes everything accepted before it returns; later ``enqueue`` calls raise
  :class:`QueueClosedError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from vgi_vision.errors import VgiVisionError

__all__ = ["CoalescingWriteQueue", "QueueClosedError"]

log = logging.getLogger(__name__)

T = TypeVar("T")

WriteBatch = Callable[[list[T]], Awaitable[None]]
#: Called after each successful write; may be sync or async. For metrics, caches, indexing.
OnFlushed = Callable[[list[T]], Awaitable[None] | None]

DEFAULT_WINDOW_SECONDS = 0.1
DEFAULT_MAX_BATCH = 128
DEFAULT_MAX_QUEUE_SIZE = 4096

# Marks the end of the stream in the internal queue; put there by stop().
_STOP = object()


class QueueClosedError(VgiVisionError, RuntimeError):
    """``enqueue`` was called on a queue that is stopping or stopped."""


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _positive_seconds(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


class CoalescingWriteQueue(Generic[T]):
    """Batch records for ``write_batch``; one background task per queue does the writing.

    The queue binds to the event loop of its first ``enqueue``; use it from that loop only.
    Batches are written one at a time, in enqueue order, so a sink never sees concurrent calls.
    """

    def __init__(
        self,
        write_batch: WriteBatch[T],
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        on_flushed: OnFlushed[T] | None = None,
    ) -> None:
        if not callable(write_batch):
            raise ValueError("write_batch must be an async callable taking a list of records")
        if on_flushed is not None and not callable(on_flushed):
            raise ValueError("on_flushed must be callable or None")
        self._write_batch = write_batch
        self._on_flushed = on_flushed
        self._window = _positive_seconds("window_seconds", window_seconds)
        self._max_batch = _positive_int("max_batch", max_batch)
        self._max_queue_size = _positive_int("max_queue_size", max_queue_size)
        # One permit per accepted-but-unwritten record; released when its batch is done.
        self._room = asyncio.Semaphore(self._max_queue_size)
        self._items: asyncio.Queue[tuple[T, asyncio.Future[None]] | object] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._pending = 0

    @property
    def closed(self) -> bool:
        """True once ``stop`` was called; no more records are accepted."""
        return self._closed

    @property
    def pending(self) -> int:
        """Records accepted but whose batch has not finished writing."""
        return self._pending

    async def enqueue(self, record: T) -> asyncio.Future[None]:
        """Accept ``record`` for writing; waits while ``max_queue_size`` records are pending.

        Returns a future resolving to ``None`` once the record's batch is written, or carrying
        the exception ``write_batch`` raised. Awaiting it is how a caller gets durability;
        callers that do not need it may drop the future (the failure is then only logged by
        asyncio as "exception never retrieved").
        """
        self._check_open()
        await self._room.acquire()
        if self._closed:  # stop() ran while we waited for room
            self._room.release()
            self._check_open()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._items.put_nowait((record, future))
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="coalescing-write-queue")
        return future

    async def stop(self) -> None:
        """Refuse new records, then flush everything accepted so far. Safe to call again.

        If the caller is cancelled (say, a timeout) the flush carries on in the background;
        calling ``stop`` again waits for it.
        """
        if not self._closed:
            self._closed = True
            self._items.put_nowait(_STOP)
        if self._worker is not None:
            # Shielded: a caller timing out on stop() must not cancel the in-flight write.
            await asyncio.shield(self._worker)

    async def __aenter__(self) -> CoalescingWriteQueue[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise QueueClosedError("write queue is stopped; no more records are accepted")

    async def _run(self) -> None:
        """Collect a batch per window (or until full) and write it; exit after the stop mark."""
        stopping = False
        while not stopping:
            first = await self._items.get()
            if first is _STOP:
                return
            batch = [first]
            try:
                # The window starts with the batch's first record, so a lone record waits at
                # most one window. Cancellation by the timeout cannot lose an item: Queue.get
                # leaves it queued if cancelled before returning it.
                async with asyncio.timeout(self._window):
                    while len(batch) < self._max_batch:
                        item = await self._items.get()
                        if item is _STOP:
                            stopping = True  # flush now: nothing can follow the stop mark
                            break
                        batch.append(item)
            except TimeoutError:
                pass
            await self._flush(batch)  # type: ignore[arg-type]

    async def _flush(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        records = [record for record, _ in batch]
        futures = [future for _, future in batch]
        try:
            await self._write_batch(records)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the sink's failure belongs to the callers
            log.warning("write_batch failed for %d records: %r", len(records), exc)
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            await self._notify_flushed(records)
            for future in futures:
                if not future.done():
                    future.set_result(None)
        finally:
            self._pending -= len(batch)
            for _ in batch:
                self._room.release()

    async def _notify_flushed(self, records: list[T]) -> None:
        """Run the hook; its failure is logged only, since the data is already durable."""
        if self._on_flushed is None:
            return
        try:
            result = self._on_flushed(records)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - a hook must never break the write path
            log.exception("on_flushed hook failed; the batch itself was written")

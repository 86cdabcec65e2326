"""The worker's synchronous bridge to LanceDB write-back.

Function ticks run on the dispatcher's threads; LanceDB's async API and the coalescing queues
live on one event loop owned by a background thread here. A tick hands over one batch of a
run's rows and goes on inferring, but at most ``max_in_flight`` batches may be unwritten at
once: a slow LanceDB slows inference down instead of growing memory. ``finish`` makes a run
durable and visible, or rolls it back and raises. A run that already committed (its request
replayed or retried) is left exactly as it is.

Every ``compact_every`` commits the same thread checks the tables in the background and
compacts those that need it
(:meth:`~vgi_vision.worker.lance.store.PredictionStore.maintain`): after the commit, never
inside it, so a run's result does not depend on it, and a maintenance error is only logged.
Within one worker a commit waits for a maintenance round in progress (they never race each
other); with replicas, Lance settles races with other workers' commits. A maintenance round
first deletes the staged rows of runs unfinished for longer than ``staged_lifetime_seconds``
(the continuation token lifetime: no request can continue them any more), so scans
abandoned mid-way do not leave rows behind for good.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pyarrow as pa

from vgi_vision.worker.lance.kinds import CLASSIFICATION, KINDS, ResultKind, RunError
from vgi_vision.worker.lance.store import VERSION_RETENTION, PredictionStore, is_commit_conflict
from vgi_vision.worker.lance.vector_index import INDEX_MIN_ROWS
from vgi_vision.worker.lance.write_queue import CoalescingWriteQueue
from vgi_vision.worker.tokens import DEFAULT_TTL_SECONDS

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_IN_FLIGHT = 2
#: How long ``finish`` waits for rows that another replica wrote to become countable.
SETTLE_SECONDS = 10.0
#: Commits between two maintenance checks (the choice: bench/bench_store_growth.py and
#: docs/performance.md).
DEFAULT_COMPACT_EVERY = 10


class WriteBack:
    def __init__(self, uri: str, embedding_dim: int, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 window_seconds: float = 0.1, max_batch: int = 128,
                 max_queue_size: int = 4096, recovery_grace_seconds: float = 0.0,
                 compact_every: int = DEFAULT_COMPACT_EVERY,
                 version_retention: timedelta = VERSION_RETENTION,
                 staged_lifetime_seconds: float = DEFAULT_TTL_SECONDS,
                 index_min_rows: int = INDEX_MIN_ROWS) -> None:
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) \
                or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if isinstance(compact_every, bool) or not isinstance(compact_every, int) \
                or compact_every < 0:
            raise ValueError(f"compact_every must be an integer >= 0 (0: never), "
                             f"got {compact_every!r}")
        self.compact_every = compact_every
        self.version_retention = version_retention
        self.staged_lifetime_seconds = staged_lifetime_seconds
        self._commits = 0
        self._touched: set[ResultKind] = set()  # kinds committed since the last maintenance
        self._maintenance: concurrent.futures.Future | None = None
        self._store_lock = asyncio.Lock()  # a commit or a maintenance round, one at a time
        self.uri = uri
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vgi-lance",
                                        daemon=True)
        self._thread.start()
        self._in_flight = threading.BoundedSemaphore(max_in_flight)
        self._pending: dict[str, list[concurrent.futures.Future]] = {}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.store = self._run(PredictionStore.open(uri, embedding_dim,
                                                        recovery_grace_seconds,
                                                        staged_lifetime_seconds))
        except BaseException:
            self._stop_loop()
            raise
        self.store.index_min_rows = index_min_rows
        self._queues: dict[ResultKind, CoalescingWriteQueue[dict[str, Any]]] = {
            kind: CoalescingWriteQueue(self._appender(kind), window_seconds=window_seconds,
                                       max_batch=max_batch, max_queue_size=max_queue_size)
            for kind in KINDS}

    def _appender(self, kind: ResultKind) -> Callable[[list[dict[str, Any]]], Awaitable[None]]:
        async def append(rows: list[dict[str, Any]]) -> None:
            await self.store.append(rows, kind)  # looked up per batch: the store is the sink

        return append

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def write(self, run_id: str, rows: list[dict[str, Any]],
              kind: ResultKind = CLASSIFICATION) -> None:
        """Queue one batch of a run's rows; blocks while ``max_in_flight`` are unwritten."""
        if self._closed:
            raise RunError("write-back is shut down")
        self._in_flight.acquire()
        try:
            future = asyncio.run_coroutine_threadsafe(self._write(rows, kind), self._loop)
        except BaseException:
            self._in_flight.release()
            raise
        with self._lock:
            self._pending.setdefault(run_id, []).append(future)
        future.add_done_callback(functools.partial(self._landed, run_id))

    def _landed(self, run_id: str, future: concurrent.futures.Future) -> None:
        """A batch is written: free its in-flight slot and, if it succeeded, forget it.

        Failed batches stay listed so that ``finish`` sees the failure. Forgetting the others
        keeps a replica that never serves a run's last request from holding it forever.
        """
        self._in_flight.release()
        if future.cancelled() or future.exception() is not None:
            return
        with self._lock:
            batches = self._pending.get(run_id, [])
            if future in batches:
                batches.remove(future)
            if not batches:
                self._pending.pop(run_id, None)

    async def _write(self, rows: list[dict[str, Any]], kind: ResultKind) -> None:
        queue = self._queues[kind]
        await asyncio.gather(*[await queue.enqueue(row) for row in rows])

    def committed(self, run_id: str) -> bool:
        """Whether the run already committed: then its requests must not write again."""
        return self._run(self.store.committed(run_id))

    def _settle(self, run_id: str) -> list[concurrent.futures.Future]:
        """This worker's batches of the run, once each has landed or failed.

        Deciding before that would let a rollback race a batch still being written and leave
        the batch behind as an orphan.
        """
        with self._lock:
            futures = self._pending.pop(run_id, [])
        concurrent.futures.wait(futures)
        return futures

    def abort(self, run_id: str) -> None:
        """Roll back a run whose call failed before it could finish."""
        self._settle(run_id)
        try:
            self._run(self.store.rollback(run_id))
        except Exception:  # noqa: BLE001 - recovery at the next start finishes the job
            log.exception("rollback of run %s failed", run_id)

    def finish(self, run_id: str, images: int, kind: ResultKind = CLASSIFICATION,
               job_id: str = "") -> None:
        """Commit the run (as part of job ``job_id``, "" for none) once every row is staged;
        otherwise roll it back and raise.

        A run that is already committed (its last request replayed or retried) stays as it is.
        """
        futures = self._settle(run_id)
        try:
            for future in futures:
                future.result()
            self._run(self._commit_when_settled(run_id, images, kind, job_id))
        except Exception as exc:
            self.abort(run_id)
            raise RunError(f"write-back failed, run {run_id} was rolled back: {exc}") from exc
        self._after_commit(kind)

    def _after_commit(self, kind: ResultKind) -> None:
        """Count the commit; every ``compact_every`` start a maintenance round in the
        background (unless one is still running: the next commit starts one)."""
        with self._lock:
            self._commits += 1
            self._touched.add(kind)
            due = (self.compact_every and self._commits >= self.compact_every
                   and (self._maintenance is None or self._maintenance.done())
                   and not self._closed)
            if not due:
                return
            kinds, self._touched, self._commits = sorted(self._touched, key=str), set(), 0
            self._maintenance = asyncio.run_coroutine_threadsafe(self._maintain(kinds),
                                                                 self._loop)

    async def _maintain(self, kinds: list[ResultKind], force: bool = False) -> None:
        try:
            async with self._store_lock:
                await self.store.recover(self.staged_lifetime_seconds)
                await self.store.maintain(kinds, self.version_retention, force=force)
            if CLASSIFICATION in kinds:  # commits go on meanwhile (see maintain_index)
                await self.store.maintain_index()
        except Exception:  # noqa: BLE001 - maintain logs per table; this is a bug guard
            log.exception("store maintenance failed")

    def maintain(self) -> None:
        """Compact every table now (tests, tools), needed or not; waits for it."""
        self._run(self._maintain(list(KINDS), force=True))

    async def _commit_when_settled(self, run_id: str, images: int, kind: ResultKind,
                                   job_id: str = "") -> None:
        """Over HTTP a run's batches may come from several replicas: give theirs time to land.

        Checked each round: the run may have committed meanwhile through a concurrent replay
        of this request, which is then success, not a missing batch.

        A commit that meets a commit conflict Lance could not settle itself (another
        worker's write or compaction on the same fragments) is tried again too: each step of
        a commit is safe to repeat (the merge is keyed, the run record makes the next round
        see the run committed, and a delete of staged rows deletes what is left).
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            try:
                async with self._store_lock:
                    if await self.store.committed(run_id):
                        await self.store.rollback(run_id)  # rows a replay staged after it
                        return
                    return await self.store.commit(run_id, images, kind, job_id)
            except RunError:
                if time.monotonic() > deadline:
                    raise
            except Exception as exc:
                if not is_commit_conflict(exc) or time.monotonic() > deadline:
                    raise
                log.info("commit of run %s met a concurrent commit, trying again: %s",
                         run_id, exc)
            await asyncio.sleep(0.05)

    def version(self, kind: ResultKind = CLASSIFICATION) -> int:
        return self._run(self.store.version(kind))

    def page(self, version: int, offset: int, limit: int,
             kind: ResultKind = CLASSIFICATION) -> pa.Table:
        return self._run(self.store.page(version, offset, limit, kind))

    def nearest(self, vector: list[float], k: int, model: str) -> pa.Table:
        return self._run(self.store.nearest(vector, k, model))

    def hashes(self) -> pa.Table:
        return self._run(self.store.hashes())

    def paths_of(self, keys: list[str]) -> pa.Array:
        return self._run(self.store.paths_of(keys))

    def stored_vector(self, image_key: str, model: str) -> list[float] | None:
        return self._run(self.store.stored_vector(image_key, model))

    def close(self) -> None:
        """Drain the queues (nothing accepted is dropped), then close the tables."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                maintenance = self._maintenance
            if maintenance is not None:
                concurrent.futures.wait([maintenance])
            for queue in self._queues.values():
                self._run(queue.stop())
            self.store.close()
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

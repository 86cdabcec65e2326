"""CoalescingWriteQueue: coalescing, back-pressure, failure isolation, draining, hooks.

Pure queue mechanics use an in-memory recording sink (the queue is the unit under test);
durability end to end is checked against a real LanceDB table in ``tmp_path``. Every test runs
under ``asyncio.wait_for`` and a pytest-timeout so a regression hangs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import lancedb
import pyarrow as pa
import pytest

from vgi_vision.worker.lance import CoalescingWriteQueue, QueueClosedError

pytestmark = pytest.mark.timeout(60)

#: Long enough that a window never closes by itself within a test's own steps.
LONG_WINDOW = 30.0


def run(test: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(test(), timeout))


class SinkError(RuntimeError):
    pass


class RecordingSink:
    """Records each batch; fails on chosen call numbers; can be held closed by ``gate``."""

    def __init__(self, fail_calls: tuple[int, ...] = (), gate: asyncio.Event | None = None):
        self.fail_calls = fail_calls
        self.gate = gate
        self.calls = 0
        self.batches: list[list[Any]] = []
        self.events: list[str] = []

    async def __call__(self, records: list[Any]) -> None:
        self.calls += 1
        call = self.calls
        self.events.append(f"write-start-{call}")
        if self.gate is not None:
            await self.gate.wait()
        if call in self.fail_calls:
            self.events.append(f"write-failed-{call}")
            raise SinkError(f"batch {call} failed")
        self.batches.append(list(records))
        self.events.append(f"write-done-{call}")


async def enqueue_all(queue: CoalescingWriteQueue[Any], records: list[Any]) -> list[asyncio.Future]:
    return [await queue.enqueue(r) for r in records]


# --- coalescing -------------------------------------------------------------------------------


def test_records_within_one_window_are_one_write() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        queue = CoalescingWriteQueue(sink, window_seconds=0.2)
        futures = await enqueue_all(queue, list(range(50)))
        await asyncio.gather(*futures)
        assert sink.batches == [list(range(50))]
        await queue.stop()

    run(scenario)


def test_max_batch_splits_and_keeps_order() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        queue = CoalescingWriteQueue(sink, window_seconds=0.2, max_batch=128)
        futures = await enqueue_all(queue, list(range(300)))
        await asyncio.gather(*futures)
        assert [len(b) for b in sink.batches] == [128, 128, 44]
        assert [r for b in sink.batches for r in b] == list(range(300))
        await queue.stop()

    run(scenario)


def test_lone_record_is_written_when_window_closes() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        queue = CoalescingWriteQueue(sink, window_seconds=0.05)
        future = await queue.enqueue("only")
        assert await asyncio.wait_for(future, 5) is None  # no stop(), no further records
        assert sink.batches == [["only"]]
        assert not queue.closed and queue.pending == 0
        await queue.stop()

    run(scenario)


# --- back-pressure ----------------------------------------------------------------------------


def test_full_queue_blocks_enqueue_until_a_flush_frees_room() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        sink = RecordingSink(gate=gate)
        queue = CoalescingWriteQueue(sink, window_seconds=0.01, max_queue_size=8)
        first = await enqueue_all(queue, list(range(8)))
        assert queue.pending == 8

        async def ninth() -> asyncio.Future:
            future = await queue.enqueue(8)
            sink.events.append("ninth-accepted")
            return future

        blocked = asyncio.create_task(ninth())
        for _ in range(10):  # give the worker and the blocked enqueue every chance to run
            await asyncio.sleep(0.02)
        assert sink.calls == 1 and not blocked.done()
        assert queue.pending == 8

        gate.set()
        last = await blocked
        await asyncio.gather(*first, last)
        assert sink.events.index("write-done-1") < sink.events.index("ninth-accepted")
        assert sink.batches == [list(range(8)), [8]]
        await queue.stop()

    run(scenario)


# --- failures ---------------------------------------------------------------------------------


def test_failed_batch_fails_only_its_own_futures_and_queue_keeps_running() -> None:
    async def scenario() -> None:
        sink = RecordingSink(fail_calls=(2,))
        queue = CoalescingWriteQueue(sink, window_seconds=0.2, max_batch=3)
        futures = await enqueue_all(queue, list(range(9)))
        results = await asyncio.gather(*futures, return_exceptions=True)

        assert results[:3] == [None] * 3 and results[6:] == [None] * 3
        failed = results[3:6]
        assert all(isinstance(r, SinkError) for r in failed)
        assert failed[0] is failed[1] is failed[2]  # the sink's own exception, shared
        assert sink.batches == [[0, 1, 2], [6, 7, 8]]

        assert await (await queue.enqueue(9)) is None
        assert sink.batches[-1] == [9]
        assert queue.pending == 0
        await queue.stop()

    run(scenario)


# --- stop -------------------------------------------------------------------------------------


def test_stop_without_records_and_twice_is_harmless() -> None:
    async def scenario() -> None:
        queue = CoalescingWriteQueue(RecordingSink())
        await queue.stop()
        await queue.stop()
        assert queue.closed
        with pytest.raises(QueueClosedError):
            await queue.enqueue(1)

    run(scenario)


def test_stop_refuses_an_enqueue_that_was_waiting_for_room() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        sink = RecordingSink(gate=gate)
        queue = CoalescingWriteQueue(sink, window_seconds=0.01, max_queue_size=2)
        accepted = await enqueue_all(queue, ["a", "b"])
        waiting = asyncio.create_task(queue.enqueue("c"))
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(queue.stop())
        await asyncio.sleep(0)
        gate.set()
        await stopping
        with pytest.raises(QueueClosedError):
            await waiting
        assert all(f.done() and f.result() is None for f in accepted)
        assert sink.batches == [["a", "b"]]

    run(scenario)


def test_timed_out_stop_does_not_abort_the_flush() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        sink = RecordingSink(gate=gate)
        queue = CoalescingWriteQueue(sink, window_seconds=LONG_WINDOW)
        futures = await enqueue_all(queue, [1, 2])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.stop(), 0.05)  # the sink is still held by the gate
        assert not any(f.done() for f in futures)
        gate.set()
        await queue.stop()
        assert [f.result() for f in futures] == [None, None]
        assert sink.batches == [[1, 2]]

    run(scenario)


def test_async_context_manager_stops_and_flushes() -> None:
    async def scenario() -> None:
        sink = RecordingSink()
        async with CoalescingWriteQueue(sink, window_seconds=LONG_WINDOW) as queue:
            futures = await enqueue_all(queue, [1, 2, 3])
        assert queue.closed and all(f.done() for f in futures)
        assert sink.batches == [[1, 2, 3]]

    run(scenario)


# --- on_flushed -------------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync-hook", "async-hook"])
def test_on_flushed_runs_once_per_successful_flush_before_futures_resolve(is_async: bool) -> None:
    async def scenario() -> None:
        seen: list[tuple[list[int], bool]] = []
        futures: list[asyncio.Future] = []

        def record(batch: list[int]) -> None:
            resolved = any(futures[i].done() for i in batch)
            seen.append((list(batch), resolved))

        async def record_async(batch: list[int]) -> None:
            await asyncio.sleep(0)
            record(batch)

        queue = CoalescingWriteQueue(
            RecordingSink(fail_calls=(2,)),
            window_seconds=0.2,
            max_batch=2,
            on_flushed=record_async if is_async else record,
        )
        futures.extend(await enqueue_all(queue, list(range(6))))
        await asyncio.gather(*futures, return_exceptions=True)
        await queue.stop()
        assert seen == [([0, 1], False), ([4, 5], False)]

    run(scenario)


def test_failing_on_flushed_is_logged_and_never_fails_the_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        def broken_hook(batch: list[int]) -> None:
            raise ZeroDivisionError("hook bug")

        sink = RecordingSink()
        queue = CoalescingWriteQueue(sink, window_seconds=0.05, on_flushed=broken_hook)
        first = await enqueue_all(queue, [1, 2])
        assert await asyncio.gather(*first) == [None, None]
        second = await queue.enqueue(3)
        assert await second is None
        await queue.stop()
        assert sink.batches == [[1, 2], [3]]

    with caplog.at_level(logging.ERROR, logger="vgi_vision.worker.lance.write_queue"):
        run(scenario)
    hook_errors = [r for r in caplog.records if "on_flushed" in r.getMessage()]
    assert len(hook_errors) == 2
    assert all(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in hook_errors)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window_seconds": 0}, "window_seconds"),
        ({"window_seconds": -0.1}, "window_seconds"),
        ({"window_seconds": float("nan")}, "window_seconds"),
        ({"window_seconds": float("inf")}, "window_seconds"),
        ({"window_seconds": "0.1"}, "window_seconds"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 1.5}, "max_batch"),
        ({"max_batch": True}, "max_batch"),
        ({"max_queue_size": -1}, "max_queue_size"),
        ({"max_queue_size": None}, "max_queue_size"),
        ({"on_flushed": 42}, "on_flushed"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CoalescingWriteQueue(RecordingSink(), **kwargs)


def test_write_batch_must_be_callable() -> None:
    with pytest.raises(ValueError, match="write_batch"):
        CoalescingWriteQueue(None)  # type: ignore[arg-type]


# --- real LanceDB -----------------------------------------------------------------------------

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("vector", pa.list_(pa.float32(), 4)),
    ]
)


def make_record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "label": f"label-{i % 10}",
        "score": i / 1000,
        "vector": [float(i), float(i % 7), 0.5, -1.0],
    }


async def open_table(path: Any) -> Any:
    db = await lancedb.connect_async(str(path))
    return await db.create_table("predictions", schema=SCHEMA)


def lance_sink(table: Any) -> Callable[[list[dict[str, Any]]], Awaitable[None]]:
    calls: list[int] = []

    async def write_batch(records: list[dict[str, Any]]) -> None:
        calls.append(len(records))
        await table.add(pa.Table.from_pylist(records, schema=SCHEMA))

    write_batch.calls = calls  # type: ignore[attr-defined]
    return write_batch


def stored_rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.sort_by("id").to_pylist()
    for row in rows:
        row["score"] = pytest.approx(row["score"])
    return rows


def test_lancedb_round_trip_of_1000_records(tmp_path: Any) -> None:
    async def scenario() -> None:
        table = await open_table(tmp_path)
        sink = lance_sink(table)
        queue = CoalescingWriteQueue(sink, window_seconds=0.05, max_batch=128)
        records = [make_record(i) for i in range(1000)]

        futures = [await queue.enqueue(r) for r in records]
        await asyncio.gather(*futures)  # durable: readable without stop()

        assert await table.count_rows() == 1000
        assert sum(sink.calls) == 1000 and len(sink.calls) < 1000 // 100
        # One table version per add: coalescing is what keeps the version count small.
        assert len(await table.list_versions()) == 1 + len(sink.calls)
        assert stored_rows(await table.query().to_arrow()) == records
        assert await table.count_rows("label = 'label-3'") == 100
        await queue.stop()

    run(scenario, timeout=60)


def test_lancedb_stop_drains_everything_pending(tmp_path: Any) -> None:
    async def scenario() -> None:
        table = await open_table(tmp_path)
        sink = lance_sink(table)
        queue = CoalescingWriteQueue(sink, window_seconds=LONG_WINDOW, max_batch=128)
        records = [make_record(i) for i in range(300)]
        futures = await enqueue_all(queue, records)

        await queue.stop()  # the long window never closes: only stop() can flush

        assert all(f.done() and f.exception() is None for f in futures)
        assert queue.pending == 0
        assert sink.calls == [128, 128, 44]
        reopened = await (await lancedb.connect_async(str(tmp_path))).open_table("predictions")
        assert stored_rows(await reopened.to_arrow()) == records
        with pytest.raises(QueueClosedError):
            await queue.enqueue(make_record(300))
        await queue.stop()
        assert await reopened.count_rows() == 300

    run(scenario, timeout=60)

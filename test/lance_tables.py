"""Reading a LanceDB store's tables in tests, with a fresh connection each time (so what a
test sees is what is on disk, not what a writer's open handle caches)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import pyarrow as pa

from vgi_vision.worker.lance.kinds import IMAGES, RUNS, STAGED
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.registry import Args, FunctionSpec
from vgi_vision.worker.ticks import run_ticks

T = TypeVar("T")


def each_table(uri: Path | str, names: tuple[str, ...],
               read: Callable[[Any], Awaitable[T]]) -> dict[str, T]:
    """``read(table)`` of each table in ``names``, by name."""

    async def read_all() -> dict[str, T]:
        db = await lancedb.connect_async(str(uri))
        values = {}
        for name in names:
            table = await db.open_table(name)
            values[name] = await read(table)
            table.close()
        db.close()
        return values

    return asyncio.run(read_all())


def read_tables(uri: Path | str, names: tuple[str, ...]) -> dict[str, pa.Table]:
    """The rows of each table in ``names``."""
    return each_table(uri, names, lambda table: table.query().to_arrow())


def table_counts(uri: Path | str, names: tuple[str, ...] = (IMAGES, STAGED, RUNS)
                 ) -> dict[str, int]:
    """Rows per table (classification's by default)."""
    return each_table(uri, names, lambda table: table.count_rows())


def assert_replayed_mid_state_stages_nothing(spec: FunctionSpec, args: Args, sink: WriteBack,
                                             tables: tuple[str, str, str]) -> None:
    """Run a paged scan (``spec`` over ``args``, writing back to ``sink``) whose second tick
    leaves rows pending, to its end; then resume the state it had after its first tick for
    one tick, as a replayed request would. That tick answers a page again, but its run has
    committed: the stored rows stay exactly as they were, nothing is left staged and no
    second run appears. ``tables`` are (stored, staged, runs)."""
    stored, staged, runs = tables
    state = spec.impl.initial_state(args)
    run_ticks(spec, args, state, max_ticks=1)
    mid = state.to_bytes()
    assert not run_ticks(spec, args, state, max_ticks=1).finished  # rows pending
    while not run_ticks(spec, args, state, max_ticks=1).finished:
        pass
    before = read_tables(sink.uri, tables)
    assert before[runs].num_rows == 1 and before[stored].num_rows == 2
    replayed = run_ticks(spec, args, spec.impl.state_type.from_bytes(mid), max_ticks=1)
    assert not replayed.finished and replayed.batch is not None
    sink.close()  # every batch write-back took has landed
    after = read_tables(sink.uri, tables)
    assert after[staged].num_rows == 0
    assert after[stored].sort_by("image_key").equals(before[stored].sort_by("image_key"))
    assert after[runs].num_rows == 1

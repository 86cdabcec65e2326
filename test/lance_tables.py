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

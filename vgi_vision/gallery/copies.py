"""How many paths each stored image was stored from, kept in the gallery's summary for the
"N paths" badge and the *has copies* facet.

The summary's ``path_counts`` table holds (image_key, paths) for every image the store's
``paths`` table names. It follows the store as the rest of the summary does: when runs
commit, only their images' keys are counted again, by key. Paths rows are only ever added, so
each count read is at most the true one, and the counts are exact exactly when their sum
equals the ``paths`` table's row count, read after them. When it does not (a run added a
path to an image it did not store again: a copy under a new name of an image already stored
with as many classes; or a run was committing meanwhile), the ``image_key`` column of
``paths`` is read again, a batch at a time: never the images, their vectors or thumbnails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from vgi_vision.gallery.transaction import transaction
from vgi_vision.store import StoreReader

#: No primary key: its index would cost more memory than the table on a large store.
_CREATE = "CREATE TABLE IF NOT EXISTS path_counts (image_key VARCHAR, paths INTEGER)"


async def count_paths(con: duckdb.DuckDBPyConnection, store: StoreReader,
                      keys: Iterable[str] | None) -> None:
    """Bring ``path_counts`` up to date: the paths of ``keys`` counted again (None: every
    image's), then all of them if the sum disagrees with the store's."""
    await asyncio.to_thread(con.execute, _CREATE)
    if keys is not None:
        counts = await store.path_counts(sorted(set(keys)))
        await asyncio.to_thread(_put, con, counts)
        if await asyncio.to_thread(_sum, con) == (await store.path_rows() or 0):
            return
    await _recount(con, store)


async def _recount(con: duckdb.DuckDBPyConnection, store: StoreReader) -> None:
    """Every image's count, from the ``image_key`` column of ``paths``."""
    cursor = con.cursor()
    await asyncio.to_thread(cursor.execute,
                            "CREATE OR REPLACE TEMP TABLE path_keys (image_key VARCHAR)")
    async for batch in store.path_keys():
        await asyncio.to_thread(_append_keys, cursor, batch)
    await asyncio.to_thread(cursor.execute, """
        BEGIN;
        DELETE FROM path_counts;
        INSERT INTO path_counts SELECT image_key, count(*) FROM path_keys GROUP BY image_key;
        COMMIT;
        DROP TABLE path_keys;""")


def _append_keys(cursor: duckdb.DuckDBPyConnection, batch: pa.RecordBatch) -> None:
    cursor.register("batch", batch)
    cursor.execute("INSERT INTO path_keys SELECT image_key FROM batch")
    cursor.unregister("batch")


def _put(con: duckdb.DuckDBPyConnection, counts: dict[str, int]) -> None:
    if not counts:
        return
    with transaction(con) as cursor:
        cursor.register("counts", pa.table({
            "image_key": list(counts), "paths": pa.array(list(counts.values()), pa.int32())}))
        cursor.execute("DELETE FROM path_counts WHERE image_key IN (SELECT image_key FROM counts)")
        cursor.execute("INSERT INTO path_counts SELECT image_key, paths FROM counts")
        cursor.unregister("counts")


def _sum(con: duckdb.DuckDBPyConnection) -> int:
    (total,), = con.cursor().execute("SELECT coalesce(sum(paths), 0) FROM path_counts").fetchall()
    return int(total)

"""Reading a write-back store from outside the worker: the stored classifications, read-only.

A worker started with ``--lance URI`` (or ``attach(con, lance=URI)``) stores one row per image
and model in the ``images`` table of a LanceDB database: the ranked classes as lists
(``idx``, ``label``, ``confidence``, ``top_k`` of them), ``path``, ``run_id``, ``created_at``,
the embedding (``vector``) and a small JPEG (``thumbnail``). Only committed runs are in it.
:class:`StoreReader` reads it without ever writing: open it, ask for the newest
:meth:`~StoreReader.version`, then read a version pinned with :meth:`~StoreReader.at`, so every
read of one view sees the same rows while runs keep committing::

    reader = await StoreReader.open(uri)  # None: the URI holds no store
    images = await reader.at(await reader.version())
    rows = await images.rows(["image_key", "label"])  # plus _rowid, to take() them again
    images.close()
    reader.close()

All of it is async (LanceDB's async API) and must stay on one event loop.
"""

from __future__ import annotations

from typing import Any

import lancedb
import pyarrow as pa

from vgi_vision.worker.lance.kinds import IMAGES
from vgi_vision.worker.lance.vector_index import nearest


class PinnedImages:
    """The ``images`` table at one version: what it held then, whatever commits since."""

    def __init__(self, table: Any, version: int) -> None:
        self._table = table
        self.version = version

    async def rows(self, columns: list[str]) -> pa.Table:
        """``columns`` of every stored row, plus its ``_rowid`` for :meth:`take`."""
        return await self._table.query().with_row_id().select(columns).to_arrow()

    async def take(self, row_ids: list[int], columns: list[str]) -> pa.Table:
        """``columns`` of the rows ``row_ids`` (from :meth:`rows` of this version), in the
        table's order, not necessarily the order asked for."""
        return await self._table.take_row_ids(row_ids).select(columns).to_arrow()

    async def nearest(self, vector: list[float], limit: int, model: str, columns: list[str]
                      ) -> pa.Table:
        """``columns`` and ``_distance`` of the ``limit`` rows stored by ``model`` whose
        embedding is nearest to ``vector`` by cosine distance, nearest first (through the
        vector index when the store has one)."""
        return await nearest(self._table, vector, limit, model, columns)

    def close(self) -> None:
        self._table.close()


class StoreReader:
    """Read-only access to the stored classifications of a write-back store."""

    def __init__(self, db: Any) -> None:
        self._db = db

    @classmethod
    async def open(cls, uri: str) -> StoreReader | None:
        """The store at ``uri`` (a folder or an object store URI); None when it holds none."""
        db = await lancedb.connect_async(uri)
        if IMAGES not in (await db.list_tables()).tables:
            db.close()
            return None
        return cls(db)

    async def version(self) -> int:
        """The newest version of the stored images."""
        table = await self._db.open_table(IMAGES)
        try:
            return await table.version()
        finally:
            table.close()

    async def at(self, version: int) -> PinnedImages:
        """The stored images as of ``version``; close it when done."""
        table = await self._db.open_table(IMAGES)
        await table.checkout(version)
        return PinnedImages(table, version)

    def close(self) -> None:
        self._db.close()

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
    async for batch in images.batches({"image_key": "image_key", "top1": "label[1]"}):
        ...
    rows = await images.rows_of(image_key, None, ["model", "label"])  # one image's rows
    images.close()
    reader.close()

All of it is async (LanceDB's async API) and must stay on one event loop.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import lancedb
import pyarrow as pa

from vgi_vision.worker.lance.kinds import IMAGES, OBJECTS, PATHS, RUNS
from vgi_vision.worker.lance.paths import KEYS_PER_FILTER, key_filter
from vgi_vision.worker.lance.vector_index import model_filter, nearest

#: Run ids per ``IN (...)`` filter when reading the rows of newly committed runs.
RUNS_PER_FILTER = 500

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def runs_filter(run_ids: Sequence[str]) -> str:
    """``run_id IN (...)``; each id is checked to be one of ours (32 hex digits) first."""
    for run_id in run_ids:
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"invalid run id {run_id!r}")
    return "run_id IN (" + ", ".join(f"'{run_id}'" for run_id in run_ids) + ")"


class PinnedImages:
    """The ``images`` table at one version: what it held then, whatever commits since."""

    def __init__(self, table: Any, version: int) -> None:
        self._table = table
        self.version = version

    async def count(self) -> int:
        return await self._table.count_rows()

    async def batches(self, columns: Mapping[str, str]) -> AsyncIterator[pa.RecordBatch]:
        """Every stored row, a batch at a time, as ``columns`` (name: SQL expression over
        the stored columns, e.g. ``"label[1]"``): never the whole table in memory at once."""
        async for batch in await self._table.query().select(dict(columns)).to_batches():
            yield batch

    async def of_runs(self, run_ids: Sequence[str], columns: Mapping[str, str]
                      ) -> pa.Table | None:
        """``columns`` (as for :meth:`batches`) of the rows the runs ``run_ids`` stored;
        None for no runs."""
        ids = sorted(run_ids)
        read = [await self._table.query().where(runs_filter(ids[i:i + RUNS_PER_FILTER]))
                .select(dict(columns)).to_arrow() for i in range(0, len(ids), RUNS_PER_FILTER)]
        return pa.concat_tables(read) if read else None

    async def rows_of(self, image_key: str, model: str | None, columns: list[str]
                      ) -> pa.Table:
        """``columns`` of the image's stored rows: one per model, or ``model``'s only (found
        through the ``image_key`` index when the store has one)."""
        where = key_filter([image_key])
        if model is not None:
            by_model = model_filter(model)
            if by_model is None:
                return pa.table({c: [] for c in columns})
            where += f" AND {by_model}"
        return await self._table.query().where(where).select(columns).to_arrow()

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

    async def committed_runs(self) -> set[str] | None:
        """The ids of every committed run; None for a store without a ``runs`` table.

        A run's images are merged before its record is written, so every run listed here
        has its rows in any version of ``images`` pinned after this call.
        """
        table = await self._optional(RUNS)
        if table is None:
            return None
        try:
            rows = await table.query().select(["run_id"]).to_arrow()
        finally:
            table.close()
        return set(rows.column("run_id").to_pylist())

    async def jobs_of(self, run_ids: Sequence[str]) -> dict[str, str]:
        """run id -> job id, for those of ``run_ids`` that were requested as part of a job
        (a store written before jobs existed has none)."""
        table = await self._optional(RUNS)
        if table is None:
            return {}
        ids = sorted(run_ids)
        jobs: dict[str, str] = {}
        try:
            if "job_id" not in (await table.schema()).names:
                return {}
            for i in range(0, len(ids), RUNS_PER_FILTER):
                rows = await table.query().where(
                    f"{runs_filter(ids[i:i + RUNS_PER_FILTER])} AND job_id IS NOT NULL") \
                    .select(["run_id", "job_id"]).to_arrow()
                jobs.update(zip(rows.column("run_id").to_pylist(),
                                rows.column("job_id").to_pylist(), strict=True))
        finally:
            table.close()
        return jobs

    async def paths_of(self, image_key: str) -> list[tuple[str, datetime | None,
                                                           datetime | None]] | None:
        """(path, first_seen, last_seen) of every path the image was stored from, first
        seen first; None for a store from before paths were kept (not yet upgraded)."""
        table = await self._optional(PATHS)
        if table is None:
            return None
        try:
            rows = await table.query().where(key_filter([image_key])) \
                .select(["path", "first_seen", "last_seen"]).to_arrow()
        finally:
            table.close()
        ordered = rows.sort_by([("first_seen", "ascending"), ("path", "ascending")])
        return [(row["path"], row["first_seen"], row["last_seen"]) for row in ordered.to_pylist()]

    async def detections_version(self) -> int | None:
        """The newest version of the stored detections; None for a store without any."""
        table = await self._optional(OBJECTS)
        if table is None:
            return None
        try:
            return await table.version()
        finally:
            table.close()

    async def detections(self, columns: list[str], image_key: str | None = None
                         ) -> pa.Table | None:
        """``columns`` of the stored detections (one row per image and detector, the
        detections as lists), of every image or of ``image_key``'s; None for a store
        without any."""
        table = await self._optional(OBJECTS)
        if table is None:
            return None
        try:
            query = table.query().select(columns)
            if image_key is not None:
                query = query.where(key_filter([image_key]))
            return await query.to_arrow()
        finally:
            table.close()

    async def path_rows(self) -> int | None:
        """How many (image, path) rows the ``paths`` table holds now; None without one.
        Rows are only ever added there, never removed."""
        table = await self._optional(PATHS)
        if table is None:
            return None
        try:
            return int(await table.count_rows())
        finally:
            table.close()

    async def path_keys(self) -> AsyncIterator[pa.RecordBatch]:
        """The ``image_key`` of every ``paths`` row (one per path), a batch at a time."""
        table = await self._optional(PATHS)
        if table is None:
            return
        try:
            async for batch in await table.query().select(["image_key"]).to_batches():
                yield batch
        finally:
            table.close()

    async def path_counts(self, image_keys: Sequence[str]) -> dict[str, int]:
        """How many paths each of ``image_keys`` was stored from (keys without any are left
        out), read by key a slice at a time."""
        table = await self._optional(PATHS)
        if table is None:
            return {}
        unique = sorted(set(image_keys))
        counts: dict[str, int] = {}
        try:
            for i in range(0, len(unique), KEYS_PER_FILTER):
                rows = await table.query().where(key_filter(unique[i:i + KEYS_PER_FILTER])) \
                    .select(["image_key"]).to_arrow()
                for key in rows.column("image_key").to_pylist():
                    counts[key] = counts.get(key, 0) + 1
        finally:
            table.close()
        return counts

    async def _optional(self, name: str) -> Any:
        if name not in (await self._db.list_tables()).tables:
            return None
        return await self._db.open_table(name)

    def close(self) -> None:
        self._db.close()

"""LanceDB tables for stored predictions and embeddings, with all-or-nothing runs.

A *run* is one function call's worth of rows. Rows are appended with ``committed = false``
(invisible to readers, which always filter on ``committed``), in as many batches as the write
queue makes. Committing a run is:

1. check that both tables hold exactly the rows the run wrote (nothing lost on the way);
2. append a row to ``runs``: the commit record, written only once all children exist;
3. flip the run's rows to ``committed = true`` (one ``update`` per table, each atomic).

A failed run is rolled back by deleting its rows. On open, recovery finishes what a crash
interrupted: runs with a commit record are rolled forward (step 3 again), uncommitted rows
without one are deleted. So no reader ever sees part of a run, and nothing is left pending
that no one will finish.

Everything here is async and must run on one event loop (see :mod:`vgi_vision.lance.writeback`
for the thread that owns it). The URI goes straight to ``lancedb.connect_async``, so object
store URIs work as well as local folders.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import lancedb
import pyarrow as pa

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
EMBEDDINGS = "embeddings"
RUNS = "runs"

#: A small JPEG per stored image (see :func:`vgi_vision.imaging.jpeg_thumbnail`), so a
#: gallery can show images classified from BLOBs. NULL in rows written before it existed.
THUMBNAIL_FIELD = pa.field("thumbnail", pa.binary())

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def prediction_schema() -> pa.Schema:
    return pa.schema([
        ("image_key", pa.string()), ("path", pa.string()), ("model", pa.string()),
        ("rank", pa.int32()), ("idx", pa.int32()), ("label", pa.string()),
        ("confidence", pa.float64()), ("run_id", pa.string()),
        ("created_at", pa.timestamp("us")), ("committed", pa.bool_()),
    ])


def embedding_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("image_key", pa.string()), ("path", pa.string()), ("model", pa.string()),
        ("label", pa.string()), ("confidence", pa.float64()), ("run_id", pa.string()),
        ("created_at", pa.timestamp("us")), ("committed", pa.bool_()),
        ("vector", pa.list_(pa.float32(), dim)), THUMBNAIL_FIELD,
    ])


def runs_schema() -> pa.Schema:
    return pa.schema([("run_id", pa.string()), ("predictions", pa.int64()),
                      ("embeddings", pa.int64()), ("committed_at", pa.timestamp("us"))])


def utc_now() -> datetime:
    """Naive UTC: the tables store UTC timestamps without a zone (DuckDB reads them as is)."""
    return datetime.now(UTC).replace(tzinfo=None)


class RunError(RuntimeError):
    """A run could not be made durable; it was rolled back."""


def run_filter(run_id: str) -> str:
    if not _RUN_ID.match(run_id):  # ids are ours, but never splice unchecked text into SQL
        raise ValueError(f"invalid run id {run_id!r}")
    return f"run_id = '{run_id}'"


async def open_or_create(db: Any, name: str, schema: pa.Schema) -> Any:
    """The table ``name``, created if missing; one made by an older version of this package
    gains the columns added since (NULL in its existing rows)."""
    try:
        return await db.create_table(name, schema=schema, exist_ok=True)
    except ValueError:  # it exists with another schema
        table = await db.open_table(name)
        existing = await table.schema()
        missing = [field for field in schema if field.name not in existing.names]
        if missing:
            await table.add_columns(missing)
        if not (await table.schema()).equals(schema):
            table.close()
            raise
        return table


@dataclass
class PredictionStore:
    db: Any
    predictions: Any
    embeddings: Any
    runs: Any

    @classmethod
    async def open(cls, uri: str, embedding_dim: int, recovery_grace_seconds: float = 0.0
                   ) -> PredictionStore:
        db = await lancedb.connect_async(uri)
        store = cls(
            db=db,
            predictions=await db.create_table(PREDICTIONS, schema=prediction_schema(),
                                              exist_ok=True),
            embeddings=await open_or_create(db, EMBEDDINGS, embedding_schema(embedding_dim)),
            runs=await db.create_table(RUNS, schema=runs_schema(), exist_ok=True),
        )
        await store.recover(recovery_grace_seconds)
        return store

    async def recover(self, grace_seconds: float = 0.0) -> None:
        """Roll committed-but-unflipped runs forward and uncommitted leftovers back.

        Uncommitted rows written less than ``grace_seconds`` ago are left alone: with replicas
        sharing the tables they may belong to a run another worker is still writing.
        """
        newest: dict[str, datetime] = {}
        for table in (self.predictions, self.embeddings):
            pending = await table.query().where("NOT committed") \
                .select(["run_id", "created_at"]).to_arrow()
            for run_id, created in zip(pending.column("run_id").to_pylist(),
                                       pending.column("created_at").to_pylist(), strict=True):
                newest[run_id] = max(created, newest.get(run_id, created))
        cutoff = utc_now() - timedelta(seconds=grace_seconds)
        for run_id in sorted(newest):
            if await self.runs.count_rows(run_filter(run_id)):
                await self._flip(run_id)
                log.warning("recovered run %s: rolled forward", run_id)
            elif newest[run_id] <= cutoff:
                await self.rollback(run_id)
                log.warning("recovered run %s: rolled back (never committed)", run_id)

    async def append(self, table: str, rows: list[dict[str, Any]]) -> None:
        target = self.predictions if table == PREDICTIONS else self.embeddings
        await target.add(pa.Table.from_pylist(rows, schema=await target.schema()))

    async def commit(self, run_id: str, predictions: int, embeddings: int) -> None:
        where = run_filter(run_id)
        stored = (await self.predictions.count_rows(where),
                  await self.embeddings.count_rows(where))
        if stored != (predictions, embeddings):
            raise RunError(f"run {run_id} holds {stored[0]} prediction and {stored[1]} "
                           f"embedding rows, expected {predictions} and {embeddings}")
        await self.runs.add(pa.Table.from_pylist(
            [{"run_id": run_id, "predictions": predictions, "embeddings": embeddings,
              "committed_at": utc_now()}], schema=runs_schema()))
        await self._flip(run_id)

    async def _flip(self, run_id: str) -> None:
        where = f"{run_filter(run_id)} AND NOT committed"
        await self.embeddings.update(updates={"committed": True}, where=where)
        await self.predictions.update(updates={"committed": True}, where=where)

    async def rollback(self, run_id: str) -> None:
        """Remove every trace of an unacknowledged run, its commit record first."""
        where = run_filter(run_id)
        await self.runs.delete(where)
        await self.predictions.delete(where)
        await self.embeddings.delete(where)

    async def version(self) -> int:
        return await self.predictions.version()

    async def page(self, version: int, offset: int, limit: int) -> pa.Table:
        """Committed prediction rows ``offset..offset+limit`` as of table ``version``.

        Paging a pinned version keeps every page of one scan consistent even while other
        runs commit (a commit rewrites rows, which would shift plain offsets).
        """
        table = await self.db.open_table(PREDICTIONS, version=version)
        try:
            return await table.query().where("committed").offset(offset).limit(limit) \
                .select([f.name for f in prediction_schema() if f.name != "committed"]) \
                .to_arrow()
        finally:
            table.close()

    async def nearest(self, vector: list[float], k: int) -> pa.Table:
        return await self.embeddings.vector_search(vector).column("vector") \
            .distance_type("cosine").where("committed").limit(k) \
            .select(["image_key", "path", "label", "confidence", "_distance"]).to_arrow()

    def close(self) -> None:
        for table in (self.predictions, self.embeddings, self.runs):
            table.close()
        self.db.close()

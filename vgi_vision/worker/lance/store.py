"""LanceDB tables for stored results: one row per (image, model), written in all-or-nothing runs.

OCR results follow the same mechanism in their own pair of tables, ``ocr`` and ``ocr_staged``
(one row per image and OCR model, its lines as lists; see :data:`TEXT`), and so do detections,
in ``objects`` and ``objects_staged`` (one row per image and detector, its detections as
lists; see :data:`DETECTION`); a run commits into one pair. What follows says ``images``
and ``staged`` for any.

A *run* is one function call's worth of results. Four tables:

* ``images``: what readers see. One row per (``image_key``, ``model``) holding the image's
  ranked predictions (list columns) and its embedding, so a prediction and its embedding
  become visible in the same table version: a reader can never see one without the other.
* ``staged``: rows of runs still being written, appended in as many batches as the write
  queue makes (over HTTP, by several replicas). Nobody reads them but the commit.
* ``runs``: one record per committed run, so a replayed or retried request of a run that
  already committed writes nothing and commits nothing again.
* ``paths``: every path each stored image was stored from (:mod:`.paths`), so copies of one
  file under other names are one image with all their paths.

Committing a run is:

1. check that ``staged`` holds a row for every argument row the run classified (nothing lost
   on the way; a replayed batch stages the same argument rows again, which does not count);
2. record the paths of the run's rows in ``paths``, then merge its rows into ``images`` on
   (``image_key``, ``model``): one atomic table version.
   An image already stored keeps its row, unless this run ranked more classes (a larger
   ``top_k``), in which case the wider row replaces it. So re-classifying stored images (a
   retried request, a re-run query, a sub-batch retried on another worker) never duplicates
   them, and nothing stored is ever removed;
3. append the run's record to ``runs``, then delete its staged rows.

The merge key is declared an (unenforced) primary key, which makes Lance detect two concurrent
merges inserting the same new image and retry one, so replicas committing the same image at
the same time still store it once. A failed run is rolled back by deleting its staged rows,
which never touches ``images``. On open, recovery deletes staged rows left by a crash.
A run nobody finishes (an HTTP scan abandoned mid-way) leaves staged rows without a crash:
once they are older than a scan can continue (the continuation token lifetime), recovery and
every maintenance round of the write-back thread delete them too.

Every run adds small fragments and a table version to each table it touches, so
:meth:`PredictionStore.maintain` (run by the write-back thread every few commits, never as
part of a run) compacts them with LanceDB's ``optimize`` once they are worth it (see
:func:`needs_compaction`): small fragments are rewritten into one (deleted staged rows dropped
on the way) and the files of versions older than :data:`VERSION_RETENTION` are removed.
Younger versions stay readable, so a ``predictions()`` scan paging a pinned version finishes
with the rows it started with. Compaction only rewrites rows, it never adds or removes one;
when it races another worker's merge or delete on the same fragments, Lance lets the writer
win (its commit rebases or retries) and the compaction's commit fails, which is logged and
skipped until the next round.

Everything here is async and must run on one event loop (see
:mod:`vgi_vision.worker.lance.writeback` for the thread that owns it). The URI goes straight
to ``lancedb.connect_async``, so object store URIs work as well as local folders.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import lancedb
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.worker.lance.kinds import (
    CLASSIFICATION,
    IMAGES,
    KINDS,
    OBJECTS,
    OBJECTS_STAGED,
    OCR,
    OCR_STAGED,
    PATHS,
    RUNS,
    STAGED,
    ResultKind,
    RunError,
    utc_now,
)
from vgi_vision.worker.lance.paths import (
    key_filter,
    open_paths,
    path_lists,
    record_paths,
    stored_paths,
)
from vgi_vision.worker.lance.vector_index import (
    INDEX_MIN_ROWS,
    VECTOR_INDEX,
    build_index,
    model_filter,
    nearest,
    needs_index,
    stale_index,
)
from vgi_vision.worker.stored import (
    IMAGE_IDENTITY,
    image_schema,
    objects_schema,
    ocr_schema,
    runs_schema,
    staged_schema,
    staging,
)
from vgi_vision.worker.tokens import DEFAULT_TTL_SECONDS

log = logging.getLogger(__name__)

#: Versions younger than this are never cleaned up by :meth:`PredictionStore.maintain`: six
#: times the continuation token lifetime (one hour, :mod:`vgi_vision.worker.tokens`, which
#: bounds an HTTP scan) and far above any call, so a ``predictions()`` scan paging a pinned
#: version, or a replica committing on top of an older one, finds its files. Older versions'
#: files are removed; a compaction's replaced files stay this long, which is the disk cost.
VERSION_RETENTION = timedelta(hours=6)

#: A table is compacted once the rows written since its last compaction (those outside its
#: largest fragment) are this share of its rows ...
COMPACT_NEW_ROWS_SHARE = 0.1
#: ... or once it has this many fragments, whatever their size.
COMPACT_MAX_FRAGMENTS = 64

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def run_filter(run_id: str) -> str:
    if not _RUN_ID.match(run_id):  # ids are ours, but never splice unchecked text into SQL
        raise ValueError(f"invalid run id {run_id!r}")
    return f"run_id = '{run_id}'"


def is_commit_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Lance reporting a commit that lost a race with another commit."""
    return "commit conflict" in str(exc).lower()


def needs_compaction(stats: dict[str, Any]) -> bool:
    """Whether a table with these ``AsyncTable.stats()`` is worth compacting now.

    LanceDB's ``optimize`` rewrites every fragment smaller than a million rows, so compacting
    ``images`` rewrites the whole table (and keeps the replaced files for the retention
    age). Waiting until the new rows are a share of the table keeps the rewriting in
    proportion to what was written (about ``1 / COMPACT_NEW_ROWS_SHARE`` times the table over
    its life) instead of growing with the number of runs; the fragment cap keeps reads and
    commits fast on a large table that grows slowly.
    """
    fragments = stats["fragment_stats"]
    if fragments["num_fragments"] < 2:
        return False
    if fragments["num_fragments"] >= COMPACT_MAX_FRAGMENTS:
        return True
    rows = stats["num_rows"]
    return rows - fragments["lengths"]["max"] >= COMPACT_NEW_ROWS_SHARE * rows


def one_row_per_image(staged: pa.Table, kind: ResultKind = CLASSIFICATION) -> pa.Table:
    """The row ``kind`` keeps (e.g. the largest top_k) of each (image_key, model) in
    ``staged``, as stored rows.

    A run stages an image twice when it appears in two argument rows or when a batch was
    replayed; the merge needs each identity once.
    """
    keys = zip(staged.column("image_key").to_pylist(), staged.column("model").to_pylist(),
               strict=True)
    sign = 1 if kind.larger_wins else -1
    values = [sign * v for v in staged.column(kind.column).to_pylist()]
    kept: dict[tuple[str, str], int] = {}
    for row, key in enumerate(keys):
        if key not in kept or values[row] > values[kept[key]]:
            kept[key] = row
    return staged.take(pa.array(sorted(kept.values()), pa.int64())).drop_columns(["input_row"])


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
    images: Any
    staged: Any
    runs: Any
    embedding_dim: int
    ocr: Any = None
    ocr_staged: Any = None
    paths: Any = None
    objects: Any = None
    objects_staged: Any = None
    index_min_rows: int = INDEX_MIN_ROWS

    @classmethod
    async def open(cls, uri: str, embedding_dim: int, recovery_grace_seconds: float = 0.0,
                   staged_lifetime_seconds: float = DEFAULT_TTL_SECONDS) -> PredictionStore:
        """The store at ``uri``, its tables created or upgraded, then recovered: staged rows
        older than ``recovery_grace_seconds`` are deleted, and whatever the grace those older
        than ``staged_lifetime_seconds``, whose scans can no longer continue."""
        # Every read checks for the latest version: other replicas commit to the same tables.
        db = await lancedb.connect_async(uri, read_consistency_interval=timedelta(0))
        images = await open_or_create(db, IMAGES, image_schema(embedding_dim))
        ocr = await open_or_create(db, OCR, ocr_schema())
        store = cls(
            db=db,
            images=images,
            staged=await open_or_create(db, STAGED, staged_schema(embedding_dim)),
            runs=await open_or_create(db, RUNS, runs_schema()),
            embedding_dim=embedding_dim,
            ocr=ocr,
            ocr_staged=await open_or_create(db, OCR_STAGED, staging(ocr_schema())),
            paths=await open_paths(db, (images, ocr)),
            objects=await open_or_create(db, OBJECTS, objects_schema()),
            objects_staged=await open_or_create(db, OBJECTS_STAGED, staging(objects_schema())),
        )
        recovery_grace_seconds = min(recovery_grace_seconds, staged_lifetime_seconds)
        await store.recover(recovery_grace_seconds)
        return store

    async def recover(self, grace_seconds: float = 0.0) -> None:
        """Delete staged rows a crash or an abandoned scan left behind: their runs were
        never acknowledged.

        A run whose newest staged row was written less than ``grace_seconds`` ago is left
        alone: with replicas sharing the tables, or a scan still within its token lifetime,
        it may belong to a run that is still being written.
        """
        newest: dict[str, datetime] = {}
        for staged in self.staging_tables():
            pending = await staged.query().select(["run_id", "created_at"]).to_arrow()
            for run_id, created in zip(pending.column("run_id").to_pylist(),
                                       pending.column("created_at").to_pylist(), strict=True):
                newest[run_id] = max(created, newest.get(run_id, created))
        cutoff = utc_now() - timedelta(seconds=grace_seconds)
        for run_id in sorted(newest):
            if newest[run_id] <= cutoff:
                await self.rollback(run_id)
                log.warning("recovered run %s: staged rows deleted (never committed)", run_id)

    def _tables(self, kind: ResultKind) -> tuple[Any, Any]:
        """(stored, staging) tables of ``kind``."""
        return {IMAGES: (self.images, self.staged), OCR: (self.ocr, self.ocr_staged),
                OBJECTS: (self.objects, self.objects_staged)}[kind.table]

    def staging_tables(self) -> list[Any]:
        """The staging table of every kind: a run stages in one, but recovery and rollback
        cannot know which."""
        return [self._tables(kind)[1] for kind in KINDS]

    async def append(self, rows: list[dict[str, Any]], kind: ResultKind = CLASSIFICATION
                     ) -> None:
        """Stage one batch of a run's rows (invisible to readers until the run commits)."""
        staged = self._tables(kind)[1]
        await staged.add(pa.Table.from_pylist(rows, schema=await staged.schema()))

    async def committed(self, run_id: str) -> bool:
        return await self.runs.count_rows(run_filter(run_id)) > 0

    async def commit(self, run_id: str, images: int, kind: ResultKind = CLASSIFICATION,
                     job_id: str = "") -> None:
        """Make the run visible: merge its staged rows into ``images`` (or ``ocr``; see the
        module doc), and record it with the job it belongs to (``job_id``, "" for none)."""
        where = run_filter(run_id)
        table, staging_table = self._tables(kind)
        staged = await staging_table.query().where(where).to_arrow()
        answered = len(pc.unique(staged.column("input_row")))
        if answered != images:
            raise RunError(f"run {run_id} staged {answered} of its {images} images")
        if images:
            # Paths first: once an image is visible, every path of its committed runs is.
            await record_paths(self.paths, staged)
            await table.merge_insert(IMAGE_IDENTITY) \
                .when_matched_update_all(where=kind.replaces) \
                .when_not_matched_insert_all().execute(one_row_per_image(staged, kind))
        await self.runs.add(pa.Table.from_pylist(
            [{"run_id": run_id, "images": images, "committed_at": utc_now(),
              "job_id": job_id or None}],
            schema=runs_schema()))
        await staging_table.delete(where)

    async def rollback(self, run_id: str) -> None:
        """Remove the staged rows of an unacknowledged run; stored images are never touched."""
        for staged in self.staging_tables():
            await staged.delete(run_filter(run_id))

    def tables_of(self, kinds: Sequence[ResultKind]) -> list[tuple[str, Any]]:
        """(name, table) of the stored and staging tables of ``kinds``, and ``runs``."""
        named = [(kind.table, self._tables(kind)[0]) for kind in kinds]
        named += [(kind.staged, self._tables(kind)[1]) for kind in kinds]
        return [*named, (PATHS, self.paths), (RUNS, self.runs)]

    async def maintain(self, kinds: Sequence[ResultKind] = (CLASSIFICATION,),
                       retention: timedelta = VERSION_RETENTION, *, force: bool = False
                       ) -> dict[str, bool]:
        """Compact the tables of ``kinds`` (and ``runs``) that need it and remove their
        versions older than ``retention``; whether each compacted table's maintenance
        succeeded (tables left alone are not listed). ``force`` compacts every table.

        Never raises for a table: maintenance is an optimisation, so a failure (most often a
        commit conflict with another worker's merge or delete on the same fragments, which
        Lance resolves in the writer's favour) is logged and retried at the next round.
        """
        done: dict[str, bool] = {}
        for name, table in self.tables_of(kinds):
            try:
                stale = table is self.images and await stale_index(table)
                if not (force or stale or needs_compaction(await table.stats())):
                    continue
                stats = await table.optimize(cleanup_older_than=retention)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                level = logging.INFO if is_commit_conflict(exc) else logging.WARNING
                log.log(level, "maintenance of %s skipped this round: %s", name, exc)
                done[name] = False
            else:
                log.debug("maintenance of %s: %d fragments rewritten into %d, %d old "
                          "versions and %d bytes removed", name,
                          stats.compaction.fragments_removed, stats.compaction.fragments_added,
                          stats.prune.old_versions_removed, stats.prune.bytes_removed)
                done[name] = True
        return done

    async def maintain_index(self) -> dict[str, bool]:
        """Build the vector index once ``images`` is large enough to need it (see
        :mod:`.vector_index`); whether that succeeded, if it was due. Rows arriving later
        are folded in by ``optimize``, which :meth:`maintain` runs once enough are unindexed.

        A build takes minutes on a large store (docs/performance.md), so it is not part of
        :meth:`maintain`: the write-back thread runs it without holding commits up. Lance
        commits the index as a version of its own; rows committed during the build are
        simply not in it yet, and searched exactly.
        """
        try:
            if not await needs_index(self.images, self.index_min_rows):
                return {}
            rows = await build_index(self.images, self.paths)
        except Exception as exc:  # noqa: BLE001 - an optimisation, like compaction
            log.warning("building the vector index skipped this round: %s", exc)
            return {VECTOR_INDEX: False}
        log.info("vector index built on %d stored images", rows)
        return {VECTOR_INDEX: True}

    async def fragments(self, name: str) -> int:
        """How many fragments table ``name`` has now."""
        table = dict((n, t) for n, t in self.tables_of(KINDS))[name]
        return (await table.stats())["fragment_stats"]["num_fragments"]

    async def version(self, kind: ResultKind = CLASSIFICATION) -> int:
        return await self._tables(kind)[0].version()

    async def page(self, version: int, offset: int, limit: int,
                   kind: ResultKind = CLASSIFICATION) -> pa.Table:
        """Stored images ``offset..offset+limit`` as of table ``version``, without vectors,
        with the ``paths`` each was stored from (as they are now).

        Paging a pinned version keeps every page of one scan consistent even while other
        runs commit (a merge that widens a row rewrites it, which would shift plain offsets).
        A page's paths are read when the page is: they include every committed run's paths of
        its images (a run records its paths before its images), and possibly some of a run
        committing meanwhile.
        """
        table = await self.db.open_table(kind.table, version=version)
        try:
            columns = [f.name for f in await table.schema() if f.name != "vector"]
            page = await table.query().offset(offset).limit(limit).select(columns).to_arrow()
        finally:
            table.close()
        keys = page.column("image_key").to_pylist()
        return page.append_column("paths", path_lists(keys, await stored_paths(self.paths, keys)))

    async def nearest(self, vector: list[float], k: int, model: str) -> pa.Table:
        """The ``k`` images stored by ``model`` nearest to ``vector`` (see
        :mod:`.vector_index`)."""
        return await nearest(self.images, vector, k, model,
                             ["image_key", "path", "label", "confidence"])

    async def hashes(self) -> pa.Table:
        """(image_key, phash) of every stored image that has a perceptual hash, once per
        image (the hash is the picture's, whichever model stored it)."""
        rows = await self.images.query().where("phash IS NOT NULL") \
            .select(["image_key", "phash"]).to_arrow()
        once = rows.group_by("image_key").aggregate([("phash", "min")])
        return pa.table({"image_key": once.column("image_key"),
                         "phash": once.column("phash_min")})

    async def paths_of(self, keys: list[str]) -> pa.Array:
        """The stored paths of each image of ``keys``, first seen first."""
        return path_lists(keys, await stored_paths(self.paths, keys))

    async def stored_vector(self, image_key: str, model: str) -> list[float] | None:
        """The embedding ``model`` stored for the image ``image_key``; None if none."""
        where = model_filter(model)
        if where is None:
            return None
        rows = await self.images.query().where(f"{key_filter([image_key])} AND {where}") \
            .select(["vector"]).to_arrow()
        return rows.column("vector")[0].as_py() if rows.num_rows else None

    def close(self) -> None:
        for table in (self.images, self.staged, self.runs, self.ocr, self.ocr_staged,
                      self.paths, self.objects, self.objects_staged):
            table.close()
        self.db.close()

"""What the gallery shows, read from a write-back store (through :mod:`vgi_vision.store`)
without ever writing to it.

The rows of ``images`` (one per stored image and model) are summarized into an in-memory
DuckDB table of light columns only: the top-1 label and confidence, the top-1/top-2 margin,
keys, run, path and time, projected by LanceDB and read a batch at a time (no vectors, no
thumbnails, no ranked lists). Paging, ordering, counts and facets are SQL over it. Thumbnails,
top-k predictions, paths, vectors and neighbours are read from LanceDB per request, by image
key (through the store's key index) at the snapshot's pinned table version.

Stored detections (the ``objects`` table) feed two more facets, an object label ("has
person") and a face count: their labels per (image, detector) are read into the summary's
``found`` table whole, whenever their table's version moved (checked with the images'), and
an image's boxes are read per request for its detail page.

The store's version is looked at most every ``refresh_seconds``. When it moved, only the rows
of runs committed since are read and upserted into the summary (a run's rows carry its id,
and a run is recorded after its rows are merged); how many paths each image was stored from
is kept beside it the same way (:mod:`.copies`). The whole summary is read again only when
its row count disagrees with the store's (rows written by anything but a run, or a store
without a ``runs`` table). So a pipeline committing every few seconds costs a small read per
refresh, not a reload of the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import duckdb
import pyarrow as pa

from vgi_vision.errors import ModelError, VgiVisionError
from vgi_vision.gallery.copies import count_paths
from vgi_vision.gallery.jobs import record_jobs
from vgi_vision.gallery.transaction import transaction
from vgi_vision.store import PinnedImages, StoreReader
from vgi_vision.worker.vision.categories import load_taxonomy
from vgi_vision.worker.vision.detector_files import FACE_MODEL
from vgi_vision.worker.vision.model import ModelInfo, models_root

log = logging.getLogger(__name__)

IMAGE_KEY = re.compile(r"^[0-9a-f]{64}$")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
WNID = re.compile(r"^n[0-9]{8}$")

#: Orderings of the grid, by the name the page uses; ties broken by key so paging is stable.
ORDERS = {
    "newest": ("newest first", "created_at DESC"),
    "uncertain": ("uncertain first: lowest confidence", "confidence ASC"),
    "margin": ("uncertain first: smallest top-1/top-2 margin", "margin ASC"),
    "confident": ("most confident first", "confidence DESC"),
}
MAX_PER_PAGE = 200
MAX_SEARCH_CHARS = 100
LABEL_FACETS = 40
CATEGORY_FACETS = 25
HISTOGRAM_BARS = 12
RUN_FACETS = 20
#: Query answers a snapshot keeps (see :meth:`Snapshot.query`).
CACHED_ANSWERS = 256
#: Most rows an export of the current view holds: a bounded response, however large the store.
MAX_EXPORT_ROWS = 100_000
OBJECT_FACETS = 20
#: The face-count facet's values: images with no, one, two, or three and more faces.
FACE_COUNTS = ("0", "1", "2", "3+")


class StoreMissing(VgiVisionError, RuntimeError):
    """The URI holds no write-back store."""


class StoreChanged(VgiVisionError, RuntimeError):
    """Rows read for an image are not that image's (never expected: a guard)."""


def _number(text: str | None, default: float, low: float, high: float) -> float:
    try:
        value = float(text) if text not in (None, "") else default
    except ValueError:
        return default
    return min(max(value, low), high) if value == value else default  # NaN: default


@dataclass(frozen=True)
class Filter:
    """The grid's query-string state. Parsing is total: bad values fall back to defaults."""

    label: str = ""
    category: str = ""
    run: str = ""
    copies: bool = False
    search: str = ""
    min_confidence: float = 0.0
    max_confidence: float = 1.0
    has: str = ""
    faces: str = ""
    order: str = "newest"
    page: int = 1
    per_page: int = 48

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Filter:
        run = params.get("run", "")
        order = params.get("order", "newest")
        low = _number(params.get("min_confidence"), 0.0, 0.0, 1.0)
        high = _number(params.get("max_confidence"), 1.0, 0.0, 1.0)
        category = params.get("category", "")
        return cls(label=params.get("label", "")[:1000],
                   category=category if WNID.match(category) else "",
                   run=run if RUN_ID.match(run) else "",
                   copies=params.get("copies", "").lower() in ("1", "true"),
                   search=params.get("search", "").strip()[:MAX_SEARCH_CHARS],
                   min_confidence=min(low, high), max_confidence=max(low, high),
                   has=params.get("has", "")[:1000],
                   faces=params.get("faces", "") if params.get("faces") in FACE_COUNTS else "",
                   order=order if order in ORDERS else "newest",
                   page=int(_number(params.get("page"), 1, 1, 1_000_000)),
                   per_page=int(_number(params.get("per_page"), 48, 1, MAX_PER_PAGE)))

    def where(self, *, without: str = "") -> tuple[str, list[Any]]:
        """SQL condition and parameters; ``without`` leaves one facet out (for its counts)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.run and without != "run":  # a run, or every run of a job
            clauses.append("(run_id = ? OR run_id IN "
                           "(SELECT run_id FROM run_jobs WHERE job_id = ?))")
            params += [self.run, self.run]
        if self.copies and without != "copies":
            clauses.append("image_key IN (SELECT image_key FROM path_counts WHERE paths > 1)")
        if self.label and without != "label":
            clauses.append("label = ?")
            params.append(self.label)
        if self.category and without != "category":
            clauses.append("EXISTS (SELECT 1 FROM label_categories c WHERE c.model = "
                           "images.model AND c.label = images.label AND c.category = ?)")
            params.append(self.category)
        if self.search:
            # A label containing the text, or a label under a WordNet category one of whose
            # words is the text ("cat" finds the Egyptian Mau under "domestic cat").
            clauses.append("(contains(lower(label), ?) OR EXISTS (SELECT 1 FROM "
                           "label_categories c WHERE c.model = images.model AND c.label = "
                           "images.label AND contains(c.words, ?)))")
            params += [self.search.lower(), f" {' '.join(self.search.lower().split())} "]
        if (self.min_confidence, self.max_confidence) != (0.0, 1.0):
            clauses.append("confidence BETWEEN ? AND ?")
            params += [self.min_confidence, self.max_confidence]
        if self.has and without != "has":
            clauses.append("image_key IN (SELECT image_key FROM found_objects WHERE label = ?)")
            params.append(self.has)
        if self.faces and without != "faces":
            clauses.append("image_key IN (SELECT image_key FROM face_counts WHERE faces "
                           + (">= ?)" if self.faces.endswith("+") else "= ?)"))
            params.append(int(self.faces.rstrip("+")))
        return " AND ".join(clauses) or "true", params

    def link(self, **changes: Any) -> str:
        """The query string of this filter with ``changes``; page 1 unless a page is given."""
        changed = replace(self, **{"page": 1, **changes})
        defaults = Filter()
        return "?" + urlencode({f.name: getattr(changed, f.name) for f in fields(self)
                                if getattr(changed, f.name) != getattr(defaults, f.name)})


@dataclass(frozen=True)
class Tile:
    image_key: str
    run_id: str
    model: str
    label: str
    confidence: float
    margin: float
    path: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class Neighbour:
    image_key: str
    run_id: str
    label: str
    confidence: float
    distance: float


@dataclass(frozen=True)
class Box:
    """One stored detection, in pixels of the image as displayed."""

    face: bool
    label: str | None
    score: float | None
    x0: int
    y0: int
    x1: int
    y1: int


_TILE_COLUMNS = ", ".join(f.name for f in fields(Tile))


#: The summary's columns, as LanceDB projections of the stored ones.
LIGHT_COLUMNS = {"image_key": "image_key", "run_id": "run_id", "model": "model",
                 "label": "label[1]", "confidence": "confidence[1]",
                 "second": "confidence[2]", "path": "path", "created_at": "created_at"}

_SUMMARY = f"""
    CREATE TABLE stored (image_key VARCHAR, run_id VARCHAR, model VARCHAR, label VARCHAR,
                         confidence DOUBLE, margin DOUBLE, path VARCHAR, created_at TIMESTAMP);
    -- Rows without a top-1, which write-back never stores, are not shown.
    CREATE VIEW images AS SELECT * FROM stored
        WHERE label IS NOT NULL AND confidence IS NOT NULL;
    -- The stored detections' labels, one row per image and detector (see the module).
    CREATE TABLE found (image_key VARCHAR, model VARCHAR, label VARCHAR[]);
    CREATE VIEW found_objects AS SELECT DISTINCT image_key, unnest(label) AS label FROM found
        WHERE model <> '{FACE_MODEL}';
    CREATE VIEW face_counts AS SELECT image_key, max(len(label)) AS faces FROM found
        WHERE model = '{FACE_MODEL}' GROUP BY image_key;
"""
_INSERT = ("INSERT INTO stored SELECT image_key, run_id, model, label, confidence, "
           "confidence - coalesce(second, 0.0), path, created_at FROM batch")


@dataclass
class Snapshot:
    """The store at one version: DuckDB summary plus the stored images pinned to that version.

    Successive snapshots share one summary, updated in place (DuckDB's transactions keep a
    query that runs meanwhile consistent)."""

    version: int
    con: duckdb.DuckDBPyConnection
    images: PinnedImages
    total: int
    runs: set[str] | None
    models: frozenset[str]
    #: The version of the stored detections ``found`` holds (None: none stored).
    detections: int | None = None

    answers: OrderedDict[tuple[str, tuple[Any, ...]], list[tuple]] = field(
        default_factory=OrderedDict, repr=False)

    async def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        """Rows of ``sql``, run on a worker thread (a cursor each) so that a slow query never
        stalls the thumbnails the event loop is serving meanwhile.

        The last :data:`CACHED_ANSWERS` answers are kept with the snapshot (they cannot
        change before the store's version does): paging or reordering a filtered grid asks
        the same counts and facets again, which on a large store cost more than the page.
        """
        key = (sql, tuple(params or ()))
        if key in self.answers:
            self.answers.move_to_end(key)
            return self.answers[key]
        rows = await asyncio.to_thread(self._fetch, sql, params or [])
        self.answers[key] = rows
        if len(self.answers) > CACHED_ANSWERS:
            self.answers.popitem(last=False)
        return rows

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple]:
        return self.con.cursor().execute(sql, params).fetchall()


class Catalog:
    """Read-only access to a write-back store for the gallery."""

    def __init__(self, store: StoreReader, refresh_seconds: float) -> None:
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, uri: str, refresh_seconds: float = 2.0) -> Catalog:
        store = await StoreReader.open(uri)
        if store is None:
            raise StoreMissing(f"{uri} holds no write-back store (no images table); fill "
                               f"one with --lance first")
        return cls(store, refresh_seconds)

    async def snapshot(self) -> Snapshot:
        """The current snapshot, brought up to date first if the store has a newer version.

        While one request refreshes, the others go on with the snapshot they have: only the
        very first load is waited for.
        """
        current = self._snapshot
        if current is not None and (self._lock.locked() or
                                    time.monotonic() - self._checked < self._refresh_seconds):
            return current
        async with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._checked >= self._refresh_seconds:
                self._checked = now
                runs = await self._store.committed_runs()  # before the version: see there
                version = await self._store.version()
                if self._snapshot is None or version != self._snapshot.version \
                        or runs != self._snapshot.runs:  # a run may add only paths
                    self._snapshot = await self._refresh(self._snapshot,
                                                         await self._store.at(version), runs)
                await self._refresh_found(self._snapshot)
            return self._snapshot

    async def _refresh_found(self, snap: Snapshot) -> None:
        """Read the stored detections' labels into ``found`` again if they changed (or the
        summary is new: a new snapshot starts from the version it was made with)."""
        version = await self._store.detections_version()
        if version == snap.detections:
            return
        rows = await self._store.detections(["image_key", "model", "label"])
        await asyncio.to_thread(replace_found, snap.con, rows)
        snap.answers.clear()  # they were read from the detections replaced just now
        snap.detections = version

    async def _refresh(self, old: Snapshot | None, images: PinnedImages,
                       runs: set[str] | None) -> Snapshot:
        """The snapshot at ``images``' version: ``old`` plus the rows of the runs committed
        since, or the whole store read again when that would not be exact."""
        if old is not None and old.runs is not None and runs is not None:
            fresh = await images.of_runs(sorted(runs - old.runs), LIGHT_COLUMNS)
            stored = await asyncio.to_thread(upsert, old.con, fresh)
            if stored == await images.count():
                await count_paths(old.con, self._store, [] if fresh is None
                                  else fresh.column("image_key").to_pylist())
                await record_jobs(old.con, self._store, runs - old.runs)
                return await self._snapshot_of(old.con, images, runs, old.models)
        con = await asyncio.to_thread(duckdb.connect)
        await asyncio.to_thread(con.execute, _SUMMARY)
        async for batch in images.batches(LIGHT_COLUMNS):
            await asyncio.to_thread(insert, con, batch)
        await count_paths(con, self._store, None)
        await record_jobs(con, self._store, runs or ())
        return await self._snapshot_of(con, images, runs, None)

    async def _snapshot_of(self, con: duckdb.DuckDBPyConnection, images: PinnedImages,
                           runs: set[str] | None, models: frozenset[str] | None) -> Snapshot:
        """The snapshot over ``con``, its categories brought up to the models stored now
        (``models``: those it has categories for already)."""
        def facts() -> tuple[int, frozenset[str]]:
            cursor = con.cursor()
            (total,), = cursor.execute("SELECT count(*) FROM images").fetchall()
            stored = frozenset(m for (m,) in
                               cursor.execute("SELECT DISTINCT model FROM images").fetchall())
            return int(total), stored

        total, stored = await asyncio.to_thread(facts)
        if stored != models:
            await asyncio.to_thread(add_label_categories, con, sorted(stored))
        detections = self._snapshot.detections if self._snapshot is not None and \
            self._snapshot.con is con else None
        return Snapshot(version=images.version, con=con, images=images, total=total,
                        runs=runs, models=stored, detections=detections)

    # -- the grid ------------------------------------------------------------------------

    async def page(self, flt: Filter) -> tuple[int, list[Tile]]:
        """How many images match, and the tiles of the filter's page."""
        snap = await self.snapshot()
        where, params = flt.where()
        (count,), = await snap.query(f"SELECT count(*) FROM images WHERE {where}", params)
        order = ORDERS[flt.order][1]
        rows = await snap.query(
            f"SELECT {_TILE_COLUMNS} FROM images WHERE {where} "
            f"ORDER BY {order}, image_key, run_id LIMIT ? OFFSET ?",
            params + [flt.per_page, (flt.page - 1) * flt.per_page])
        return int(count), [Tile(*row) for row in rows]

    async def view(self, flt: Filter, limit: int = MAX_EXPORT_ROWS) -> list[Tile]:
        """Every tile the filter matches (not only its page), in its order, at most
        ``limit``: what an export of the current view holds."""
        snap = await self.snapshot()
        where, params = flt.where()
        rows = await snap.query(
            f"SELECT {_TILE_COLUMNS} FROM images WHERE {where} "
            f"ORDER BY {ORDERS[flt.order][1]}, image_key, run_id LIMIT ?", params + [limit])
        return [Tile(*row) for row in rows]

    async def label_facet(self, flt: Filter) -> list[tuple[str, int]]:
        """Labels with their image counts under every filter but the label itself."""
        snap = await self.snapshot()
        where, params = flt.where(without="label")
        rows = await snap.query(f"SELECT label, count(*) AS n FROM images WHERE {where} "
                          f"GROUP BY label ORDER BY n DESC, label LIMIT ?",
                          params + [LABEL_FACETS])
        facet = [(label, int(n)) for label, n in rows]
        if flt.label and flt.label not in {label for label, _ in facet}:
            where, params = flt.where()
            (n,), = await snap.query(f"SELECT count(*) FROM images WHERE {where}", params)
            facet.insert(0, (flt.label, int(n)))
        return facet

    async def histogram(self, flt: Filter) -> list[tuple[str, int]]:
        """The most frequent labels under the full filter, the rest summed as one bar."""
        snap = await self.snapshot()
        where, params = flt.where()
        rows = await snap.query(f"SELECT label, count(*) AS n FROM images WHERE {where} "
                          f"GROUP BY label ORDER BY n DESC, label", params)
        bars = [(label, int(n)) for label, n in rows[:HISTOGRAM_BARS]]
        rest = sum(int(n) for _, n in rows[HISTOGRAM_BARS:])
        if rest:
            bars.append((f"{len(rows) - HISTOGRAM_BARS} other labels", rest))
        return bars

    async def category_facet(self, flt: Filter) -> list[tuple[str, str, int]]:
        """WordNet categories above the images' labels, with image counts, under every filter
        but the category. Categories holding exactly the same images (a chain such as animal,
        organism, living thing) show once, as the most specific; one holding every image in
        view tells nothing and is left out. The chosen category always shows."""
        snap = await self.snapshot()
        where, params = flt.where(without="category")
        (total,), = await snap.query(f"SELECT count(*) FROM images WHERE {where}", params)
        # Counted per label first, then summed up the taxonomy: joining every image to its
        # ~20 categories took ~0.5 s at 100,000 images. XOR of member hashes sums the same way.
        rows = await snap.query(
            f"WITH per_label AS (SELECT model, label, count(*) AS n, "
            f"bit_xor(hash(image_key, run_id, model)) AS members FROM images WHERE {where} "
            f"GROUP BY model, label) "
            f"SELECT c.category, any_value(c.name), sum(n) AS n, bit_xor(members) "
            f"FROM per_label JOIN label_categories c USING (model, label) "
            f"GROUP BY c.category ORDER BY n DESC, any_value(c.classes), c.category", params)
        facet: list[tuple[str, str, int]] = []
        seen: set[tuple[int, int]] = set()
        for wnid, name, n, members in rows:
            same = (int(n), int(members)) in seen
            seen.add((int(n), int(members)))
            if wnid == flt.category or (n < total and not same):
                facet.append((wnid, name, int(n)))
        return facet[:CATEGORY_FACETS]

    async def copies_facet(self, flt: Filter) -> int:
        """How many images in view were stored from more than one path, under every filter
        but this one."""
        snap = await self.snapshot()
        where, params = flt.where(without="copies")
        (n,), = await snap.query(f"SELECT count(*) FROM images WHERE {where} AND image_key IN "
                                 f"(SELECT image_key FROM path_counts WHERE paths > 1)", params)
        return int(n)

    async def copies(self, tiles: list[Tile]) -> dict[str, int]:
        """For the tiles stored from more than one path: image key -> how many paths."""
        snap = await self.snapshot()
        rows = await snap.query("SELECT image_key, paths FROM path_counts WHERE paths > 1 AND "
                                "image_key IN (SELECT unnest(string_split(?, ',')))",
                                [",".join(sorted({t.image_key for t in tiles}))])
        return {key: int(n) for key, n in rows}

    async def run_facet(self, flt: Filter) -> list[tuple[str, int, datetime | None, int]]:
        """The newest jobs (a run without a job is its own) under every filter but this one:
        (job or run id, images, when its first stored image was, how many runs)."""
        snap = await self.snapshot()
        where, params = flt.where(without="run")
        rows = await snap.query(
            f"SELECT coalesce(job_id, run_id) AS entry, count(*), min(created_at), "
            f"count(DISTINCT run_id), max(created_at) AS newest FROM images LEFT JOIN run_jobs "
            f"USING (run_id) WHERE {where} GROUP BY entry "
            f"ORDER BY newest DESC NULLS LAST, entry LIMIT ?", params + [RUN_FACETS])
        return [(entry, int(n), started, int(runs)) for entry, n, started, runs, _ in rows]

    async def object_facet(self, flt: Filter) -> list[tuple[str, int]]:
        """Labels of the stored objects with how many images in view show one, under every
        filter but the object label; the chosen label always shows."""
        snap = await self.snapshot()
        where, params = flt.where(without="has")
        rows = await snap.query(
            f"SELECT label, count(*) AS n FROM found_objects WHERE image_key IN "
            f"(SELECT image_key FROM images WHERE {where}) GROUP BY label "
            f"ORDER BY n DESC, label LIMIT ?", params + [OBJECT_FACETS])
        facet = [(label, int(n)) for label, n in rows]
        if flt.has and flt.has not in {label for label, _ in facet}:
            facet.insert(0, (flt.has, 0))
        return facet

    async def face_facet(self, flt: Filter) -> list[tuple[str, int]]:
        """How many images in view show no, one, two, three or more faces (of those searched
        for faces), under every filter but the face count."""
        snap = await self.snapshot()
        where, params = flt.where(without="faces")
        rows = await snap.query(
            f"SELECT least(faces, 3) AS bucket, count(*) FROM face_counts WHERE image_key IN "
            f"(SELECT image_key FROM images WHERE {where}) GROUP BY bucket", params)
        counts = {FACE_COUNTS[int(bucket)]: int(n) for bucket, n in rows}
        return [(bucket, counts[bucket]) for bucket in FACE_COUNTS if bucket in counts]

    # -- one image -----------------------------------------------------------------------

    async def boxes(self, tile: Tile) -> tuple[tuple[int, int] | None, list[Box]]:
        """The image's stored detections, best first per detector, and the size (as
        displayed) their boxes are in; no boxes when none are stored or the size is not."""
        rows = await self._store.detections(
            ["image_key", "model", "width", "height", "label", "score", "x0", "y0", "x1", "y1"],
            tile.image_key)
        if rows is None or not rows.num_rows:
            return None, []
        if set(rows.column("image_key").to_pylist()) - {tile.image_key}:
            raise StoreChanged("the store changed under the snapshot")  # never the wrong image
        size, boxes = None, []
        for row in rows.to_pylist():
            if not row["width"] or not row["height"]:
                continue
            size = size or (row["width"], row["height"])
            boxes += [Box(row["model"] == FACE_MODEL, *values) for values in zip(
                *(row[c] or [] for c in ("label", "score", "x0", "y0", "x1", "y1")),
                strict=False)]
        return size, boxes

    async def tile(self, image_key: str, run_id: str = "") -> Tile | None:
        """The image's tile: from run ``run_id`` when that is a run id, else its newest."""
        if not IMAGE_KEY.match(image_key):
            return None
        run_id = run_id if RUN_ID.match(run_id) else ""
        snap = await self.snapshot()
        which, params = ("run_id = ?", [run_id]) if run_id else ("true", [])
        rows = await snap.query(f"SELECT {_TILE_COLUMNS} FROM images WHERE image_key = ? AND "
                          f"{which} ORDER BY created_at DESC LIMIT 1", [image_key] + params)
        return Tile(*rows[0]) if rows else None

    async def around(self, flt: Filter, tile: Tile
                     ) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        """(image key, run id) of the tiles before and after ``tile`` in the view ``flt``,
        in its order across pages; None at either end, or when the tile is not in the view."""
        snap = await self.snapshot()
        where, params = flt.where()
        rows = await snap.query(
            f"SELECT * FROM (SELECT image_key, run_id, lag(image_key) OVER w, lag(run_id) "
            f"OVER w, lead(image_key) OVER w, lead(run_id) OVER w FROM images WHERE {where} "
            f"WINDOW w AS (ORDER BY {ORDERS[flt.order][1]}, image_key, run_id)) "
            f"WHERE image_key = ? AND run_id = ?", params + [tile.image_key, tile.run_id])
        if not rows:
            return None, None
        _, _, prev_key, prev_run, next_key, next_run = rows[0]
        return ((prev_key, prev_run) if prev_key else None,
                (next_key, next_run) if next_key else None)

    async def top_k(self, tile: Tile) -> list[tuple[int, str | None, float | None]]:
        """The stored ranked predictions of one image (by row id: no stored text is ever
        spliced into a filter); a NULL inside the stored lists stays None."""
        _, rows = await self._rows_of(tile.image_key, ["label", "confidence"], tile.model)
        if not rows.num_rows:
            return []
        labels = rows.column("label")[0].as_py() or []
        confidences = rows.column("confidence")[0].as_py() or []
        return [(rank, label, confidence) for rank, (label, confidence)
                in enumerate(zip(labels, confidences, strict=False), start=1)]

    async def _rows_of(self, image_key: str, columns: list[str], model: str | None = None
                       ) -> tuple[Snapshot, pa.Table]:
        """The stored rows of an image (one per model, or ``model``'s only) at the
        snapshot's version."""
        snap = await self.snapshot()
        rows = await snap.images.rows_of(image_key, model, ["image_key", *columns])
        if set(rows.column("image_key").to_pylist()) - {image_key}:
            raise StoreChanged("the store changed under the snapshot")  # never the wrong image
        return snap, rows

    async def paths(self, tile: Tile) -> list[tuple[str, datetime | None, datetime | None]]:
        """Every path the image was stored from, first seen first, with when."""
        stored = await self._store.paths_of(tile.image_key)
        if stored is None:  # a store from before paths were kept: the row's own path
            return [] if tile.path is None else [(tile.path, tile.created_at, tile.created_at)]
        return stored

    async def thumbnail(self, image_key: str) -> bytes | None:
        if not IMAGE_KEY.match(image_key):
            return None
        _, rows = await self._rows_of(image_key, ["thumbnail"])
        return next((t for t in rows.column("thumbnail").to_pylist() if t), None)

    async def neighbours(self, tile: Tile, k: int) -> list[Neighbour] | None:
        """The ``k`` nearest other images stored by the same model, by cosine distance of
        their embeddings (another model's embeddings live in another space); None when the
        image has no whole stored embedding to search with.

        The search is within the model (through the vector index when the store has one);
        it over-fetches to make up for the image itself and rows without a top-1.
        """
        snap, rows = await self._rows_of(tile.image_key, ["vector"], tile.model)
        vector = rows.column("vector")[0].as_py() if rows.num_rows else None
        if vector is None or None in vector:
            return None
        hits = await snap.images.nearest(
            vector, 2 * k + 1, tile.model, ["image_key", "model", "run_id", "label", "confidence"])
        seen = {tile.image_key}
        found: list[Neighbour] = []
        for hit in hits.to_pylist():
            # Like the grid, images without a top-1 label and confidence are not shown.
            label, confidence = (hit[c][0] if hit[c] else None for c in ("label", "confidence"))
            if hit["image_key"] in seen or hit["model"] != tile.model \
                    or label is None or confidence is None:
                continue
            seen.add(hit["image_key"])
            found.append(Neighbour(hit["image_key"], hit["run_id"], label, confidence,
                                   hit["_distance"]))
        return sorted(found, key=lambda n: n.distance)[:k]

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.images.close()
        self._store.close()


def insert(con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch | pa.Table) -> None:
    """Add ``batch`` (rows as :data:`LIGHT_COLUMNS` projects them) to the summary."""
    cursor = con.cursor()
    cursor.register("batch", batch)
    cursor.execute(_INSERT)
    cursor.unregister("batch")


def upsert(con: duckdb.DuckDBPyConnection, rows: pa.Table | None) -> int:
    """Put ``rows`` in the summary in place of those of the same (image_key, model); how
    many rows the summary then holds. One transaction: a query meanwhile sees before or
    after."""
    with transaction(con) as cursor:
        if rows is not None and rows.num_rows:
            cursor.register("batch", rows)
            cursor.execute("DELETE FROM stored WHERE (image_key, model) IN "
                           "(SELECT image_key, model FROM batch)")
            cursor.execute(_INSERT)
            cursor.unregister("batch")
        (total,), = cursor.execute("SELECT count(*) FROM stored").fetchall()
    return int(total)


def replace_found(con: duckdb.DuckDBPyConnection, rows: pa.Table | None) -> None:
    """Put ``rows`` (image_key, model, label list) in ``found`` in place of what it held, in
    one transaction."""
    with transaction(con) as cursor:
        cursor.execute("DELETE FROM found")
        if rows is not None and rows.num_rows:
            cursor.register("batch", rows)
            cursor.execute("INSERT INTO found SELECT image_key, model, label FROM batch")
            cursor.unregister("batch")


def add_label_categories(con: duckdb.DuckDBPyConnection, models: list[str]) -> None:
    """The ``label_categories`` table of the stored models (see :func:`label_categories`)."""
    cursor = con.cursor()
    cursor.register("categories", label_categories(models))
    cursor.execute("CREATE OR REPLACE TABLE label_categories AS SELECT * FROM categories")
    cursor.unregister("categories")


def label_categories(models: list[str]) -> pa.Table:
    """(model, label, category, name, classes, words) for every class of the stored models that ship
    WordNet categories (``categories.tsv`` beside their labels); empty for any other model.

    Model names come from the store, so only folders that exist under the models root count.
    """
    rows: dict[str, list[Any]] = {name: [] for name in
                                  ("model", "label", "category", "name", "classes",
                                   "words")}
    root = models_root()
    shipped = {p.name for p in root.iterdir()} if root.is_dir() else set()
    for model in models:
        if model not in shipped:
            continue
        try:
            info = ModelInfo.load(root / model)
            entry = info.metadata.get("categories")
            if not isinstance(entry, dict) or "file" not in entry:
                continue
            taxonomy = load_taxonomy(info.directory, entry["file"], info.wnids)
        except (ModelError, OSError, ValueError) as exc:
            log.warning("no categories for model %s: %s", model, exc)
            continue
        for index, ancestors in enumerate(taxonomy.ancestors):
            for wnid in ancestors:
                rows["model"].append(model)
                rows["label"].append(info.labels[index])
                rows["category"].append(wnid)
                rows["name"].append(taxonomy.name(wnid))
                rows["words"].append(category_words(taxonomy.lemmas[wnid]))
                rows["classes"].append(len(taxonomy.categories[wnid].classes))
    return pa.table(rows, schema=pa.schema([
        ("model", pa.string()), ("label", pa.string()), ("category", pa.string()),
        ("name", pa.string()), ("classes", pa.int64()), ("words", pa.string())]))


def category_words(lemmas: tuple[str, ...]) -> str:
    """A category's lemmas lower-cased, underscores as spaces, each between spaces and joined
    by commas (`` domestic cat , house cat ``): a search matches a whole lemma or whole words
    of one, never a fragment (``cat`` finds *domestic cat*, not *catamaran*)."""
    return ",".join(f" {lemma.replace('_', ' ').lower()} " for lemma in lemmas)

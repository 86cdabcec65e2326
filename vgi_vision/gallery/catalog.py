"""What the gallery shows, read from a write-back store without ever writing to it.

The committed rows of ``embeddings`` (one per image per run) are summarized into an in-memory
DuckDB table of light columns only: no vectors, no thumbnails. Paging, ordering and facets over
100,000 images are then SQL over a few megabytes, and a page never loads more than its tiles.
Thumbnails, top-k predictions, vectors and neighbours are read from LanceDB per request, by row
id at the snapshot's pinned table version. A snapshot is replaced when the store's version
moves (looked at most every ``refresh_seconds``), so runs committed while the page is open show
up on the next request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import duckdb
import lancedb
import pyarrow as pa

from vgi_vision.categories import load_taxonomy
from vgi_vision.lance.store import EMBEDDINGS, PREDICTIONS
from vgi_vision.model import ModelError, ModelInfo, models_root

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


class StoreMissing(RuntimeError):
    """The URI holds no write-back store."""


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
    search: str = ""
    min_confidence: float = 0.0
    max_confidence: float = 1.0
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
                   search=params.get("search", "").strip()[:MAX_SEARCH_CHARS],
                   min_confidence=min(low, high), max_confidence=max(low, high),
                   order=order if order in ORDERS else "newest",
                   page=int(_number(params.get("page"), 1, 1, 1_000_000)),
                   per_page=int(_number(params.get("per_page"), 48, 1, MAX_PER_PAGE)))

    def where(self, *, without: str = "") -> tuple[str, list[Any]]:
        """SQL condition and parameters; ``without`` leaves one facet out (for its counts)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.run and without != "run":
            clauses.append("run_id = ?")
            params.append(self.run)
        elif without != "run":
            clauses.append("is_latest")  # without a run chosen, each image once: its latest
        if self.label and without != "label":
            clauses.append("label = ?")
            params.append(self.label)
        if self.category and without != "category":
            clauses.append("EXISTS (SELECT 1 FROM label_categories c WHERE c.model = "
                           "images.model AND c.label = images.label AND c.category = ?)")
            params.append(self.category)
        if self.search:
            clauses.append("contains(lower(label), ?)")
            params.append(self.search.lower())
        if (self.min_confidence, self.max_confidence) != (0.0, 1.0):
            clauses.append("confidence BETWEEN ? AND ?")
            params += [self.min_confidence, self.max_confidence]
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


_TILE_COLUMNS = ", ".join(f.name for f in fields(Tile))


@dataclass
class Snapshot:
    """The store at one version: DuckDB summary plus LanceDB tables pinned to that version."""

    version: int
    con: duckdb.DuckDBPyConnection
    embeddings: Any
    total: int

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        return self.con.cursor().execute(sql, params or []).fetchall()


class Catalog:
    """Read-only access to a write-back store for the gallery."""

    def __init__(self, db: Any, refresh_seconds: float) -> None:
        self._db = db
        self._refresh_seconds = refresh_seconds
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, uri: str, refresh_seconds: float = 2.0) -> Catalog:
        db = await lancedb.connect_async(uri)
        names = set((await db.list_tables()).tables)
        if not {EMBEDDINGS, PREDICTIONS} <= names:
            db.close()
            raise StoreMissing(f"{uri} holds no write-back store (no {EMBEDDINGS} and "
                               f"{PREDICTIONS} tables); fill one with --lance first")
        return cls(db, refresh_seconds)

    async def snapshot(self) -> Snapshot:
        """The current snapshot, reloaded first if the store has a newer version."""
        async with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._checked >= self._refresh_seconds:
                self._checked = now
                table = await self._db.open_table(EMBEDDINGS)
                version = await table.version()
                if self._snapshot is None or version != self._snapshot.version:
                    await table.checkout(version)
                    self._snapshot = await self._load(table, version)
                else:
                    table.close()
            return self._snapshot

    async def _load(self, embeddings: Any, version: int) -> Snapshot:
        light = await embeddings.query().where("committed").with_row_id().select(
            ["image_key", "run_id", "model", "label", "confidence", "path", "created_at"]
        ).to_arrow()
        predictions = await self._db.open_table(PREDICTIONS)
        try:
            second = await predictions.query().where("committed AND rank = 2") \
                .select(["image_key", "run_id", "confidence"]).to_arrow()
        finally:
            predictions.close()
        con = duckdb.connect()
        con.register("light", light)
        con.register("second", second)
        con.execute("""
            CREATE TABLE images AS
            WITH one_per_run AS (
                SELECT * FROM light
                QUALIFY row_number() OVER (PARTITION BY image_key, model, run_id
                                           ORDER BY _rowid) = 1)
            SELECT i.*, i.confidence - coalesce(s.confidence, 0.0) AS margin,
                   row_number() OVER (PARTITION BY i.image_key, i.model
                                      ORDER BY i.created_at DESC NULLS LAST, i._rowid DESC) = 1
                       AS is_latest
            FROM one_per_run i
            LEFT JOIN (SELECT image_key, run_id, max(confidence) AS confidence
                       FROM second GROUP BY ALL) s USING (image_key, run_id)""")
        con.unregister("light")
        con.unregister("second")
        models = [m for (m,) in con.execute("SELECT DISTINCT model FROM images").fetchall()]
        con.register("categories", label_categories(models))
        con.execute("CREATE TABLE label_categories AS SELECT * FROM categories")
        con.unregister("categories")
        total = con.execute("SELECT count(*) FROM images WHERE is_latest").fetchall()[0][0]
        return Snapshot(version=version, con=con, embeddings=embeddings, total=int(total))

    # -- the grid ------------------------------------------------------------------------

    async def page(self, flt: Filter) -> tuple[int, list[Tile]]:
        """How many images match, and the tiles of the filter's page."""
        snap = await self.snapshot()
        where, params = flt.where()
        (count,), = snap.query(f"SELECT count(*) FROM images WHERE {where}", params)
        order = ORDERS[flt.order][1]
        rows = snap.query(
            f"SELECT {_TILE_COLUMNS} FROM images WHERE {where} "
            f"ORDER BY {order}, image_key, run_id LIMIT ? OFFSET ?",
            params + [flt.per_page, (flt.page - 1) * flt.per_page])
        return int(count), [Tile(*row) for row in rows]

    async def label_facet(self, flt: Filter) -> list[tuple[str, int]]:
        """Labels with their image counts under every filter but the label itself."""
        snap = await self.snapshot()
        where, params = flt.where(without="label")
        rows = snap.query(f"SELECT label, count(*) AS n FROM images WHERE {where} "
                          f"GROUP BY label ORDER BY n DESC, label LIMIT ?",
                          params + [LABEL_FACETS])
        facet = [(label, int(n)) for label, n in rows]
        if flt.label and flt.label not in {label for label, _ in facet}:
            where, params = flt.where()
            (n,), = snap.query(f"SELECT count(*) FROM images WHERE {where}", params)
            facet.insert(0, (flt.label, int(n)))
        return facet

    async def histogram(self, flt: Filter) -> list[tuple[str, int]]:
        """The most frequent labels under the full filter, the rest summed as one bar."""
        snap = await self.snapshot()
        where, params = flt.where()
        rows = snap.query(f"SELECT label, count(*) AS n FROM images WHERE {where} "
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
        (total,), = snap.query(f"SELECT count(*) FROM images WHERE {where}", params)
        rows = snap.query(
            f"SELECT c.category, any_value(c.name), count(*) AS n, "
            f"bit_xor(hash(image_key, run_id, model)) AS members FROM images "
            f"JOIN label_categories c USING (model, label) WHERE {where} "
            f"GROUP BY c.category ORDER BY n DESC, any_value(c.classes), c.category", params)
        facet: list[tuple[str, str, int]] = []
        seen: set[tuple[int, int]] = set()
        for wnid, name, n, members in rows:
            same = (int(n), int(members)) in seen
            seen.add((int(n), int(members)))
            if wnid == flt.category or (n < total and not same):
                facet.append((wnid, name, int(n)))
        return facet[:CATEGORY_FACETS]

    async def run_facet(self, flt: Filter) -> list[tuple[str, int, datetime | None]]:
        """The newest runs with their image counts under every filter but the run."""
        snap = await self.snapshot()
        where, params = flt.where(without="run")
        rows = snap.query(f"SELECT run_id, count(*), max(created_at) AS newest FROM images "
                          f"WHERE {where} GROUP BY run_id ORDER BY newest DESC NULLS LAST, run_id "
                          f"LIMIT ?", params + [RUN_FACETS])
        return [(run, int(n), at) for run, n, at in rows]

    # -- one image -----------------------------------------------------------------------

    async def tile(self, image_key: str, run_id: str = "") -> Tile | None:
        if not IMAGE_KEY.match(image_key) or (run_id and not RUN_ID.match(run_id)):
            return None
        snap = await self.snapshot()
        which, params = ("run_id = ?", [run_id]) if run_id else ("is_latest", [])
        rows = snap.query(f"SELECT {_TILE_COLUMNS} FROM images WHERE image_key = ? AND "
                          f"{which} ORDER BY created_at DESC LIMIT 1", [image_key] + params)
        return Tile(*rows[0]) if rows else None

    async def top_k(self, tile: Tile) -> list[tuple[int, str, float]]:
        """The stored ranked predictions of one image in one run."""
        table = await self._db.open_table(PREDICTIONS)
        try:
            rows = await table.query().where(
                f"committed AND image_key = '{_checked(IMAGE_KEY, tile.image_key)}' "
                f"AND run_id = '{_checked(RUN_ID, tile.run_id)}'"
            ).select(["rank", "label", "confidence"]).to_arrow()
        finally:
            table.close()
        return sorted(zip(rows.column("rank").to_pylist(), rows.column("label").to_pylist(),
                          rows.column("confidence").to_pylist(), strict=True))

    async def _rows_of(self, image_key: str, columns: list[str]) -> tuple[Snapshot, pa.Table]:
        """The stored rows of an image (latest first) at the snapshot's version."""
        snap = await self.snapshot()
        ids = [row[0] for row in snap.query(
            "SELECT _rowid FROM images WHERE image_key = ? "
            "ORDER BY is_latest DESC, created_at DESC", [image_key])]
        if not ids:
            return snap, pa.table({c: [] for c in ["image_key", *columns]})
        rows = await snap.embeddings.take_row_ids(ids).select(["image_key", *columns]) \
            .to_arrow()
        if set(rows.column("image_key").to_pylist()) != {image_key}:
            raise LookupError("the store changed under the snapshot")  # never show the wrong one
        return snap, rows

    async def thumbnail(self, image_key: str) -> bytes | None:
        if not IMAGE_KEY.match(image_key):
            return None
        _, rows = await self._rows_of(image_key, ["thumbnail"])
        return next((t for t in rows.column("thumbnail").to_pylist() if t), None)

    async def neighbours(self, tile: Tile, k: int) -> list[Neighbour]:
        """The ``k`` nearest other stored images by cosine distance of their embeddings.

        ``committed`` is applied after the search, not before: prefiltering made a flat search
        over 100,000 embeddings ~4x slower (bench/bench_gallery.py). The search over-fetches
        to make up for the image itself, its other runs and any rows of unfinished runs.
        """
        snap, rows = await self._rows_of(tile.image_key, ["vector"])
        if not rows.num_rows:
            return []
        vector = rows.column("vector")[0].as_py()
        hits = await snap.embeddings.vector_search(vector).column("vector") \
            .distance_type("cosine").where("committed").postfilter().limit(4 * k + 4) \
            .select(["image_key", "run_id", "label", "confidence", "_distance"]).to_arrow()
        seen = {tile.image_key}
        found: list[Neighbour] = []
        for hit in hits.to_pylist():
            if hit["image_key"] in seen:
                continue
            seen.add(hit["image_key"])
            found.append(Neighbour(hit["image_key"], hit["run_id"], hit["label"],
                                   hit["confidence"], hit["_distance"]))
        return sorted(found, key=lambda n: n.distance)[:k]

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.embeddings.close()
        self._db.close()


def label_categories(models: list[str]) -> pa.Table:
    """(model, label, category, name, classes) for every class of the stored models that ship
    WordNet categories (``categories.tsv`` beside their labels); empty for any other model.

    Model names come from the store, so only folders that exist under the models root count.
    """
    rows: dict[str, list[Any]] = {name: [] for name in
                                  ("model", "label", "category", "name", "classes")}
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
                rows["classes"].append(len(taxonomy.categories[wnid].classes))
    return pa.table(rows, schema=pa.schema([
        ("model", pa.string()), ("label", pa.string()), ("category", pa.string()),
        ("name", pa.string()), ("classes", pa.int64())]))


def _checked(pattern: re.Pattern[str], value: str) -> str:
    if not pattern.match(value):  # values are ours, but never splice unchecked text into SQL
        raise ValueError(f"invalid identifier {value!r}")
    return value

"""The ANN index on the stored embeddings, and the one way the store is searched by them.

``images`` holds one embedding per (image, model). A search is always within one model
(another model's embeddings live in another space) and by cosine distance. Without an index
LanceDB scans every embedding, exact but linear in the store (1.4 s at 100,000 images, see
docs/performance.md); with the IVF_RQ index built here (RaBitQ: about one bit per dimension)
it visits :data:`NPROBES` of the index's partitions by those codes and re-ranks the best
``REFINE_FACTOR * k`` with their full vectors. IVF_PQ found as much but took fifty times
longer to build (its 80 codebooks are trained by k-means): 500 s against 10 s at 100,000.
Rows committed after the index was built are not in it and are searched
exactly, next to the indexed ones, until maintenance (``optimize``) adds them: new images are
found at once.

The index is built by ``vgi-vision index --lance URI`` or, once ``images`` holds
:data:`INDEX_MIN_ROWS` rows, by the write-back thread's maintenance round.
"""

from __future__ import annotations

import math
import re
from typing import Any

import lancedb
import pyarrow as pa
from lancedb.index import BTree, IvfRq

from vgi_vision.errors import VgiVisionError
from vgi_vision.worker.lance.kinds import IMAGES, PATHS

#: From this many rows on maintenance builds the index: a flat scan grows with the store
#: (about 10 microseconds a row on the bench machine: 209 ms at 20,000 rows) and passes the
#: 100 ms aim near here, while a build takes seconds in the background.
INDEX_MIN_ROWS = 10_000
#: Fewer rows than this gain nothing from an index (a flat scan of them takes a millisecond);
#: ``vgi-vision index`` refuses them rather than build something pointless.
TRAINABLE_ROWS = 256
#: Rows per IVF partition the index is built for (partitions = rows / this, at least 1).
ROWS_PER_PARTITION = 4_096
#: Partitions searched per query, and how many times ``k`` candidates are re-ranked exactly
#: (recall@10 and latency at 100,000 and 1,000,000 rows: docs/performance.md).
NPROBES = 24
REFINE_FACTOR = 10
#: Maintenance folds unindexed rows into the index once they are this share of the table.
UNINDEXED_SHARE = 0.05

VECTOR_COLUMN = "vector"
VECTOR_INDEX = f"{VECTOR_COLUMN}_idx"

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class TooFewRows(VgiVisionError, ValueError):
    """The table holds too few embeddings to train an index on."""


def model_filter(model: str) -> str | None:
    """The filter selecting ``model``'s rows; None for a name no model can have (the name
    comes from SQL arguments and stored data: only plain model names reach a filter)."""
    return f"model = '{model}'" if _MODEL.fullmatch(model) else None


def index_config(rows: int) -> IvfRq:
    return IvfRq(distance_type="cosine", num_partitions=max(1, rows // ROWS_PER_PARTITION))


async def build_index(images: Any, paths: Any = None) -> int:
    """Build (or rebuild) the index on ``images``; how many rows it was trained on.

    The ``image_key`` columns of ``images`` and ``paths`` get a B-tree index too: the gallery
    and ``similar(model := ...)`` look single images up by key, which would otherwise read
    the whole key column of a large store every time.
    """
    for table in (images, paths):
        if table is not None:
            await table.create_index("image_key", config=BTree(), replace=True)
    rows = await images.count_rows()
    if rows < TRAINABLE_ROWS:
        raise TooFewRows(f"the store holds {rows} embeddings; an index needs at least "
                         f"{TRAINABLE_ROWS} (below {INDEX_MIN_ROWS:,} a flat search is fast "
                         f"and exact anyway)")
    await images.create_index(VECTOR_COLUMN, config=index_config(rows), replace=True,
                              name=VECTOR_INDEX)
    return rows


async def index_state(images: Any) -> tuple[int, int] | None:
    """(indexed, unindexed) rows of the index on ``images``; None when it has none."""
    stats = await images.index_stats(VECTOR_INDEX)
    return None if stats is None else (stats.num_indexed_rows, stats.num_unindexed_rows)


async def needs_index(images: Any, min_rows: int = INDEX_MIN_ROWS) -> bool:
    """Whether maintenance should build the index now: none yet and ``min_rows`` stored."""
    return await index_state(images) is None and await images.count_rows() >= min_rows


async def stale_index(images: Any) -> bool:
    """Whether enough rows arrived since the index was last updated to fold them in."""
    state = await index_state(images)
    if state is None:
        return False
    indexed, unindexed = state
    return unindexed >= max(1, math.ceil(UNINDEXED_SHARE * (indexed + unindexed)))


async def nearest(images: Any, vector: list[float], k: int, model: str,
                  columns: list[str]) -> pa.Table:
    """``columns`` and ``_distance`` of the ``k`` rows of ``model`` nearest to ``vector`` by
    cosine distance, nearest first (exact without an index; see the module doc)."""
    where = model_filter(model)
    if where is None:
        schema = await images.schema()
        return pa.table({**{name: pa.array([], schema.field(name).type) for name in columns},
                         "_distance": pa.array([], pa.float32())})
    return await images.vector_search(vector).column(VECTOR_COLUMN).distance_type("cosine") \
        .where(where).nprobes(NPROBES).refine_factor(REFINE_FACTOR).limit(k) \
        .select([*columns, "_distance"]).to_arrow()


class NoStore(VgiVisionError, ValueError):
    """The URI holds no write-back store."""


async def index_store(uri: str) -> int:
    """Build (or rebuild) the index of the store at ``uri``; how many rows it covers."""
    db = await lancedb.connect_async(uri)
    try:
        if IMAGES not in (await db.list_tables()).tables:
            raise NoStore(f"{uri} holds no write-back store (no images table)")
        images = await db.open_table(IMAGES)
        paths = await db.open_table(PATHS) if PATHS in (await db.list_tables()).tables \
            else None
        try:
            return await build_index(images, paths)
        finally:
            images.close()
            if paths is not None:
                paths.close()
    finally:
        db.close()

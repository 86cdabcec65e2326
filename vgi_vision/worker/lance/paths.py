"""The ``paths`` table: every path each stored image was stored from, copies included.

``images`` keeps one row per (image, model), keyed by the image's content hash, so copies of a
file under other names are one image. Their paths go to ``paths``, one row per (image_key,
path) with when a committed run first and last stored the image from there. A run's paths are
recorded by a keyed merge of their own, just before its images are merged (see
:meth:`~vgi_vision.worker.lance.store.PredictionStore.commit`): two workers committing the same
content from two folders at once each insert their own row and never rewrite each other's, and
a replayed or retried run finds its rows already there and only moves ``last_seen``.

The stored ``first_seen`` is read before the merge and carried over; when two runs insert the
same new (image, path) at the very same moment, Lance retries one as an update, which moves
``first_seen`` to the later of the two commits (milliseconds apart): the path itself is never
lost or listed twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.worker.lance.kinds import PATHS
from vgi_vision.worker.stored import PATH_IDENTITY, paths_schema

#: Image keys per ``IN (...)`` filter: a large run's keys are looked up a slice at a time.
KEYS_PER_FILTER = 500

_IMAGE_KEY = re.compile(r"^[0-9a-f]{64}$")


def key_filter(keys: Sequence[str]) -> str:
    """``image_key IN (...)`` for ``keys``; each is checked to be a sha256 hex digest first
    (keys are ours, but no stored text is ever spliced into a filter unchecked)."""
    for key in keys:
        if not isinstance(key, str) or not _IMAGE_KEY.match(key):
            raise ValueError(f"invalid image key {key!r}")
    return "image_key IN (" + ", ".join(f"'{key}'" for key in keys) + ")"


def seen_paths(rows: pa.Table) -> pa.Table:
    """(image_key, path, first_seen, last_seen) of every distinct non-NULL (image_key, path)
    in ``rows`` (stored or staged rows with a ``created_at``)."""
    given = rows.select(["image_key", "path", "created_at"])
    given = given.filter(pc.is_valid(given.column("path")))
    seen = given.group_by(PATH_IDENTITY).aggregate([("created_at", "min"),
                                                    ("created_at", "max")])
    return pa.table({"image_key": seen.column("image_key"), "path": seen.column("path"),
                     "first_seen": seen.column("created_at_min"),
                     "last_seen": seen.column("created_at_max")}, schema=paths_schema())


async def open_paths(db: Any, stored: Iterable[Any]) -> Any:
    """The ``paths`` table, created if missing from the paths already in the ``stored``
    tables (a store written before paths were kept has exactly one per row there).

    Creating the table with those rows is one commit, so an upgrade interrupted half-way
    leaves no table and is simply done again at the next open; two workers upgrading at
    once create it once (the loser opens the winner's).
    """
    if PATHS in (await db.list_tables()).tables:
        return await db.open_table(PATHS)
    known = [await table.query().where("path IS NOT NULL")
             .select(["image_key", "path", "created_at"]).to_arrow() for table in stored]
    rows = seen_paths(pa.concat_tables(known)) if known else paths_schema().empty_table()
    try:
        return await db.create_table(PATHS, data=rows, schema=paths_schema())
    except ValueError:  # created meanwhile by another worker
        return await db.open_table(PATHS)


async def stored_paths(paths: Any, keys: Sequence[str]) -> pa.Table:
    """Every stored (image_key, path, first_seen, last_seen) of the images ``keys``."""
    unique = sorted(set(keys))
    found = [await paths.query().where(key_filter(unique[i:i + KEYS_PER_FILTER]))
             .select(paths_schema().names).to_arrow()
             for i in range(0, len(unique), KEYS_PER_FILTER)]
    return pa.concat_tables(found) if found else paths_schema().empty_table()


async def record_paths(paths: Any, rows: pa.Table) -> None:
    """Add the paths of ``rows`` (a run's staged rows) to ``paths``, keeping what is stored:
    a known path keeps its ``first_seen`` and gets a later ``last_seen``."""
    seen = seen_paths(rows)
    if not seen.num_rows:
        return
    known = await stored_paths(paths, seen.column("image_key").to_pylist())
    first: dict[tuple[str, str], datetime] = {
        (key, path): at for key, path, at in zip(
            known.column("image_key").to_pylist(), known.column("path").to_pylist(),
            known.column("first_seen").to_pylist(), strict=True)}
    keys = zip(seen.column("image_key").to_pylist(), seen.column("path").to_pylist(),
               seen.column("first_seen").to_pylist(), strict=True)
    earliest = [min(at, first.get((key, path), at)) for key, path, at in keys]
    seen = seen.set_column(2, paths_schema().field("first_seen"),
                           pa.array(earliest, pa.timestamp("us")))
    await paths.merge_insert(PATH_IDENTITY) \
        .when_matched_update_all(where="target.last_seen < source.last_seen") \
        .when_not_matched_insert_all().execute(seen)


def path_lists(keys: Sequence[str], known: pa.Table) -> pa.Array:
    """For each of ``keys``, its paths in ``known`` (from :func:`stored_paths`), first seen
    first; an image stored only from BLOBs gets an empty list."""
    ordered = known.sort_by([("first_seen", "ascending"), ("path", "ascending")])
    by_key: dict[str, list[str]] = {}
    for key, path in zip(ordered.column("image_key").to_pylist(),
                         ordered.column("path").to_pylist(), strict=True):
        by_key.setdefault(key, []).append(path)
    return pa.array([by_key.get(key, []) for key in keys], pa.list_(pa.string()))

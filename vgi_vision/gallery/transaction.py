"""One DuckDB transaction on the gallery's in-memory summary.

The summary is changed while pages read it (a refresh upserts rows, replaces the stored
detections, recounts paths): each change runs in one transaction, so a page sees the
summary before or after it, never half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of ``con`` inside a transaction: committed when the block ends, rolled back
    if it raises (anything, an interrupt too)."""
    cursor = con.cursor()
    cursor.execute("BEGIN")
    try:
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise

"""A worker's answer, checked against the request it answers before the client builds on it.

The client chose its worker, but a worker with a bug, of another version or run by someone
hostile must not be able to make the client allocate without bound, hang, or return wrong
rows silently. Every result batch must have the schema the catalog promised; a scalar call
gets exactly one value per argument row; every row of a scan names an argument row that was
sent (``input_row`` in ``[0, rows sent)``, which also bounds what is later sized from it);
and a scan ends within the call's deadline, continuations included, and after a bounded
number of pages that bring no rows.

A response that breaks these is :class:`InvalidResponse`, a transport fault: in a pool the
request goes to another worker, as for a worker that died mid-call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.errors import TransportError
from vgi_vision.protocol import INPUT_ROW

#: Consecutive scan pages without a row (and not the last one) before a scan counts as stuck.
#: A worker absorbs ticks that emit nothing, so it never sends such a page: any bound is
#: generous, and this one still ends a worker answering ``done: false`` forever at once.
MAX_PAGES_WITHOUT_ROWS = 16


class InvalidResponse(TransportError):
    """A worker's answer that does not fit the request (wrong schema, rows, or a scan that
    does not end)."""


def checked_schema(batch: pa.RecordBatch, expected: pa.Schema, function: str) -> None:
    if not batch.schema.equals(expected):
        raise InvalidResponse(f"the worker answered {function} with columns {batch.schema} "
                              f"where its catalog promised {expected}")


def checked_call_result(batch: pa.RecordBatch | None, expected: pa.Schema, function: str,
                        rows_sent: int) -> pa.Array:
    """The result column of a scalar call: one value per argument row, of the promised type."""
    if batch is None:
        raise InvalidResponse(f"the worker answered {function} with no result batch")
    checked_schema(batch, expected, function)
    if batch.num_rows != rows_sent:
        raise InvalidResponse(f"the worker answered {function} with {batch.num_rows} values "
                              f"for {rows_sent} argument rows")
    return batch.column(0)


def checked_scan_page(batch: pa.RecordBatch, expected: pa.Schema, function: str,
                      rows_sent: int) -> pa.RecordBatch:
    """A page of a scan whose every row answers an argument row that was sent."""
    checked_schema(batch, expected, function)
    input_row = batch.column(INPUT_ROW)
    if input_row.null_count:
        raise InvalidResponse(f"the worker answered {function} with rows without an "
                              f"{INPUT_ROW}")
    if batch.num_rows:
        bounds = pc.min_max(input_row)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low < 0 or high >= rows_sent:
            raise InvalidResponse(f"the worker answered {function} with {INPUT_ROW} values "
                                  f"from {low} to {high}, but {rows_sent} argument rows were "
                                  f"sent")
    return batch


@dataclass
class ScanProgress:
    """Where one scan stands: its deadline, and the pages in a row that brought nothing."""

    function: str
    timeout: float
    deadline: float = field(init=False)
    pages_without_rows: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def next_token(self, header: dict[str, Any], page_rows: int) -> str | None:
        """The token to continue with, None when the scan is done; InvalidResponse when the
        worker's answer cannot go on (no token, past the deadline, stuck without rows)."""
        if header.get("done") is True:
            return None
        token = header.get("token")
        if not isinstance(token, str) or not token:
            raise InvalidResponse(f"the worker answered {self.function} with neither a "
                                  f"token nor done")
        self.pages_without_rows = 0 if page_rows else self.pages_without_rows + 1
        if self.pages_without_rows >= MAX_PAGES_WITHOUT_ROWS:
            raise InvalidResponse(f"the worker answered {self.function} with "
                                  f"{self.pages_without_rows} pages in a row without a row "
                                  f"or the end of the scan")
        if time.monotonic() > self.deadline:
            raise InvalidResponse(f"{self.function} did not finish within the timeout of "
                                  f"{self.timeout:g} s (continuations included)")
        return token

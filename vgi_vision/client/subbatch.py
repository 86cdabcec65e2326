"""Cutting an argument batch into sub-batches a worker accepts: by rows *and* by bytes.

A worker refuses a request over its ``max_request_bytes`` and gives no prediction for an image
over its ``max_image_bytes``. Counting rows alone, 120 phone photos of 2.7 MB each make one
323 MB request and the whole query fails. So the client measures every row, closes a
sub-batch before it would outgrow the request budget, and sends a value that could never be
served (a BLOB over the per-image limit, or any value too large for a request of its own) as
NULL: that row gets the same "no prediction" the worker would have given it, and the other
rows of the query are unaffected.

The limits come from the worker's ``describe`` answer; a worker that does not state them is
assumed to run with the defaults of ``vgi-vision serve`` (:mod:`vgi_vision.protocol.limits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol.limits import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_ROWS_PER_CALL

DEFAULT_MAX_IMAGE_BYTES = 64 << 20
#: Room in every request for the message header, the schema and Arrow's buffer padding.
ENVELOPE_BYTES = 64 << 10
#: Arrow's cost per row and column besides the values: offsets, validity bits, padding.
ROW_OVERHEAD_BYTES = 16
#: Upper bound of one fixed-width value (INTEGER, DOUBLE, ...).
FIXED_VALUE_BYTES = 8


@dataclass(frozen=True)
class WorkerLimits:
    """What one request to a worker may hold."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @classmethod
    def from_worker_info(cls, info: dict[str, Any]) -> WorkerLimits:
        """The limits a worker states in its ``describe`` answer (defaults where it is silent)."""
        stated = info.get("limits") if isinstance(info, dict) else None
        stated = stated if isinstance(stated, dict) else {}
        values = {}
        for name in ("max_request_bytes", "max_rows_per_call", "max_image_bytes"):
            value = stated.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                values[name] = value
        return cls(**values)

    @staticmethod
    def tightest(limits: list[WorkerLimits]) -> WorkerLimits:
        """Limits every one of several workers accepts."""
        if not limits:
            return WorkerLimits()
        return WorkerLimits(min(x.max_request_bytes for x in limits),
                            min(x.max_rows_per_call for x in limits),
                            min(x.max_image_bytes for x in limits))

    @property
    def request_budget(self) -> int:
        """Bytes of argument values one request may carry."""
        return max(1, self.max_request_bytes - ENVELOPE_BYTES)


def row_bytes(batch: pa.RecordBatch) -> np.ndarray:
    """Approximate bytes each row adds to an encoded request."""
    sizes = np.full(batch.num_rows, ROW_OVERHEAD_BYTES * max(1, batch.num_columns),
                    dtype=np.int64)
    for column in batch.columns:
        if _is_variable_width(column.type):
            lengths = pc.fill_null(pc.binary_length(column), 0)
            sizes += lengths.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            sizes += FIXED_VALUE_BYTES
    return sizes


def without_unservable_values(batch: pa.RecordBatch, limits: WorkerLimits) -> pa.RecordBatch:
    """``batch`` with every value no worker would serve replaced by NULL.

    A BLOB over the per-image limit would get no prediction anyway; any value that does not
    fit in a request of its own could not be sent at all. Sending NULL keeps both rows' result
    ("no prediction") and spares moving the bytes.
    """
    row_limit = limits.request_budget - ROW_OVERHEAD_BYTES * max(1, batch.num_columns)
    columns = list(batch.columns)
    changed = False
    for i, column in enumerate(columns):
        if not _is_variable_width(column.type):
            continue
        limit = row_limit
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            limit = min(limit, limits.max_image_bytes)
        too_large = pc.fill_null(pc.greater(pc.binary_length(column), limit), False)
        rows = np.flatnonzero(too_large.to_numpy(zero_copy_only=False))
        if len(rows):
            columns[i] = _nulled(column, rows.tolist())
            changed = True
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema) if changed else batch


def _nulled(column: pa.Array, rows: list[int]) -> pa.Array:
    """``column`` with ``rows`` set to NULL and their bytes dropped from the value buffer
    (``pc.if_else`` keeps them, so they would still be sent)."""
    pieces, start = [], 0
    for row in rows:
        pieces += [column.slice(start, row - start), pa.nulls(1, column.type)]
        start = row + 1
    pieces.append(column.slice(start))
    return pa.concat_arrays(pieces)


def split_points(batch: pa.RecordBatch, max_rows: int, limits: WorkerLimits
                 ) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges, in order, each within ``max_rows`` and the byte budget.

    Every range holds at least one row (a row over the budget alone is the caller's to null
    first, see :func:`without_unservable_values`). An empty batch is one empty range, so a
    call still reaches the worker and returns its (empty) answer.
    """
    max_rows = max(1, min(max_rows, limits.max_rows_per_call))
    if batch.num_rows == 0:
        return [(0, 0)]
    sizes = row_bytes(batch)
    budget = limits.request_budget
    ranges: list[tuple[int, int]] = []
    start, used = 0, 0
    for row, size in enumerate(sizes.tolist()):
        full = row - start >= max_rows or (row > start and used + size > budget)
        if full:
            ranges.append((start, row))
            start, used = row, 0
        used += size
    ranges.append((start, batch.num_rows))
    return ranges


def _is_variable_width(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)
            or pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))

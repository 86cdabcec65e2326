"""How a call's rows travel: positional argument columns in, ``input_row`` tags out.

A client sends one argument batch for many rows at once; every row a table function emits
carries ``input_row``, the index of the argument row it answers, so the client can join
results back to the rows that asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

INPUT_ROW = "input_row"


def argument_rows(columns: Sequence[pa.Array], num_rows: int | None = None) -> pa.RecordBatch:
    """Argument batch for a call: positional columns, or ``num_rows`` rows of no columns."""
    if columns:
        return pa.RecordBatch.from_arrays(list(columns), names=[f"arg{i}" for i in
                                                                range(len(columns))])
    return pa.record_batch({"_": pa.nulls(1 if num_rows is None else num_rows)}).select([])

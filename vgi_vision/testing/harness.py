"""Run a table function to completion in-process, the way the HTTP transport drives it.

``invoke_table_function`` wraps the worker's own tick loop into a harness that models the
stateless HTTP transport exactly: one emitted batch per tick, the state serialized and rebuilt
from bytes between every tick, and a guard that turns a generator which never finishes into
an error instead of a hang.
"""

from __future__ import annotations

import pyarrow as pa

from vgi_vision.worker.registry import FunctionSpec
from vgi_vision.worker.ticks import TickGuardError, run_ticks

TICK_GUARD = 1000


def invoke_table_function(spec: FunctionSpec, args: pa.RecordBatch, *,
                          serialize_state: bool = True, tick_guard: int = TICK_GUARD
                          ) -> pa.Table:
    """Run a table function to completion and return every row it emitted."""
    resolved = spec.resolve(args)
    state = spec.impl.initial_state(resolved)
    batches: list[pa.RecordBatch] = []
    for _ in range(tick_guard):
        if serialize_state:
            state = type(state).from_bytes(state.to_bytes())
        out = run_ticks(spec, resolved, state, max_ticks=1)
        if out.batch is not None:
            batches.append(out.batch)
        if out.finished:
            return pa.Table.from_batches(batches, schema=spec.wire_schema)
    raise TickGuardError(f"{spec.name} did not finish within {tick_guard} ticks")

"""Driving table functions tick by tick, the way every transport does.

``run_ticks`` is the one loop the worker uses to advance a scan; ``invoke_table_function``
wraps it into a test harness that models the stateless HTTP transport exactly: one emitted batch
per tick, the state serialized and rebuilt from bytes between every tick, and a guard that
turns a generator which never finishes into an error instead of a hang.
"""

from __future__ import annotations

import pyarrow as pa

from vgi_vision.registry import Args, FunctionSpec, Output
from vgi_vision.state import ScanState

TICK_GUARD = 1000


class TickGuardError(RuntimeError):
    """A table function ran more ticks than allowed without finishing."""


def run_ticks(spec: FunctionSpec, args: Args, state: ScanState, max_ticks: int) -> Output:
    """Tick until one batch is emitted or the scan finishes; the state advances in place.

    Ticks that emit nothing (e.g. a run of undecodable images) are absorbed here, so a
    response never carries an empty batch, but only up to ``max_ticks``.
    """
    for _ in range(max_ticks):
        out = Output(spec.wire_schema)
        spec.impl.process(args, state, out)
        if out.batch is not None or out.finished:
            return out
    raise TickGuardError(f"{spec.name} ran {max_ticks} ticks without emitting or finishing")


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

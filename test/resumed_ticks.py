"""Running a table function the way HTTP does: its state to bytes and back between ticks."""

from __future__ import annotations

import pyarrow as pa

from vgi_vision.worker.registry import Args, FunctionSpec
from vgi_vision.worker.ticks import run_ticks


def resumed_batches(spec: FunctionSpec, resolved: Args) -> list[pa.RecordBatch]:
    """Every batch a scan of ``resolved`` (resolved arguments) emits, one tick at a time,
    its state serialized and read back (``state_type.from_bytes``) before each tick."""
    state = spec.impl.initial_state(resolved)
    batches = []
    while True:
        state = spec.impl.state_type.from_bytes(state.to_bytes())
        out = run_ticks(spec, resolved, state, max_ticks=1)
        if out.batch is not None:
            batches.append(out.batch)
        if out.finished:
            return batches

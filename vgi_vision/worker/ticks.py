"""The one loop that advances a table function's scan, used by every transport.

A tick may emit nothing (e.g. a run of undecodable images); ticks are repeated until a batch
is emitted or the scan finishes, but only up to a bound, so a generator that never finishes
becomes an error instead of a hung worker.
"""

from __future__ import annotations

from vgi_vision.errors import VgiVisionError
from vgi_vision.worker.registry import Args, FunctionSpec, Output
from vgi_vision.worker.state import ScanState


class TickGuardError(VgiVisionError, RuntimeError):
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

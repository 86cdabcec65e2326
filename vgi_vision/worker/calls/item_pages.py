"""Per-image results paged across ticks, shared by ``ocr``, ``detect`` and ``faces``.

Each tick reads a few images (a model takes a noticeable time an image, so a tick stays
short) and emits at most ``ROWS_PER_TICK`` rows, one per item found (a text line, an object,
a face). Rows beyond that stay in the scan state as an Arrow IPC stream of what remains, so
an image with many items spans ticks and resuming over HTTP never reads an image twice; only
what remains travels. With write-back on, the call is one run (:mod:`.runs`), committed when
the last row has been emitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.calls.runs import RunState, finish_run, new_run_id, rolled_back_on_error
from vgi_vision.worker.lance.kinds import ResultKind
from vgi_vision.worker.registry import ROWS_PER_TICK, Args, FunctionError, Output


@dataclass
class PendingState(RunState):
    """The next argument row to read, the rows found but not yet emitted, and the
    write-back run (if any) the call's results belong to."""

    kind: ClassVar[str] = "pending"
    pending: bytes = b""


def to_ipc(batch: pa.RecordBatch) -> bytes:
    if not batch.num_rows:
        return b""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes, schema: pa.Schema) -> pa.RecordBatch:
    """The pending rows of a state; its bytes were sealed by this worker (HMAC-checked over
    HTTP), so only the schema needs checking."""
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    if not table.schema.equals(schema):
        raise FunctionError("scan state holds rows of another schema", kind=ErrorKind.BAD_REQUEST)
    return table.combine_chunks().to_batches()[0] if table.num_rows else \
        pa.RecordBatch.from_pylist([], schema=schema)


class ItemPages(ABC):
    """One output row per item of each image, paged across ticks (see the module). A
    subclass says its state type (its ``kind`` names the function in scan tokens), the
    stored result ``kind`` its run commits, how many images a tick reads, and the rows of
    a batch of images (``read``)."""

    state_type: ClassVar[type[PendingState]]
    kind: ClassVar[ResultKind]
    images_per_tick: ClassVar[int]

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> PendingState:
        return self.state_type(run_id=new_run_id(self.ctx))

    @abstractmethod
    def read(self, args: Args, state: PendingState, rows: range) -> pa.RecordBatch:
        """The output rows of the argument rows ``rows``, staging them with write-back on."""

    def process(self, args: Args, state: PendingState, out: Output) -> None:
        with rolled_back_on_error(self.ctx, state):
            if state.pending:
                found = from_ipc(state.pending, out.schema)
            else:
                found = self.read(args, state, state.advance(args.num_rows, self.images_per_tick))
            state.pending = to_ipc(found.slice(ROWS_PER_TICK))
            if found.num_rows:
                out.emit(found.slice(0, ROWS_PER_TICK))
            if state.offset >= args.num_rows and not state.pending:
                finish_run(self.ctx, state, self.kind)
                out.finish()

"""Scan state: the explicit, serializable cursor of a table function.

A table function keeps everything it needs between ticks in a small dataclass. Over stdio and
unix sockets the worker holds the live object; over HTTP it travels inside a continuation token,
so it must round-trip through bytes and stay small (a position, never a materialized result).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pyarrow as pa

from vgi_vision.errors import VgiVisionError

S = TypeVar("S", bound="ScanState")


class StateError(VgiVisionError, ValueError):
    """Bytes that do not describe a state of the expected type."""


@dataclass
class ScanState:
    """Base class: subclasses are dataclasses of plain fields (int, float, str, bool, bytes).

    Serialized as a one-row Arrow IPC stream, so the format is self-describing and the decoder
    is Arrow's, not a hand-written parser; only fields the class declares are accepted.
    """

    kind: ClassVar[str] = "state"

    def to_bytes(self) -> bytes:
        row = dataclasses.asdict(self)
        batch = pa.RecordBatch.from_pylist([row])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema.with_metadata({"kind": self.kind})) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        try:
            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise StateError(f"scan state is not a valid Arrow stream: {exc}") from exc
        kind = (table.schema.metadata or {}).get(b"kind", b"").decode(errors="replace")
        names = {f.name for f in dataclasses.fields(cls)}
        if kind != cls.kind or set(table.column_names) != names or table.num_rows != 1:
            raise StateError(f"scan state does not describe a {cls.kind}")
        values: dict[str, Any] = table.to_pylist()[0]
        try:
            return cls(**values)
        except TypeError as exc:
            raise StateError(f"scan state does not describe a {cls.kind}: {exc}") from exc


@dataclass
class CursorState(ScanState):
    """A position in a deterministic sequence of rows: the next row to emit."""

    kind: ClassVar[str] = "cursor"
    offset: int = 0

    def advance(self, total: int, step: int) -> range:
        """Move the cursor past the next ``step`` rows and return the rows it moved past.

        The cursor moves *before* the caller emits, so a tick that is suspended at the emit
        boundary serializes the position after the rows it emitted.
        """
        start = self.offset
        self.offset = min(total, start + step)
        return range(start, self.offset)

"""``Client(location)``: one client API over interchangeable transports.

``None`` (or a command line) spawns a private subprocess worker, ``unix:///path`` connects to
a socket worker and ``http://host:port`` to an HTTP worker (or a load balancer in front of
several). The client reads the worker's catalog once and uses it to split big argument batches
into the chunk size each function asks for, and to tie table rows back to argument rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.protocol import ProtocolError, decode, encode
from vgi_vision.registry import INPUT_ROW, argument_rows
from vgi_vision.sqltypes import arrow_type
from vgi_vision.transports import Transport, TransportError

#: Guard against a worker that keeps returning continuation tokens forever.
MAX_CONTINUATIONS = 1_000_000


class WorkerError(RuntimeError):
    """A structured error the worker returned; ``kind`` is stable, the message human."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def open_transport(location: str | Sequence[str] | None, *, auth_token: str | None = None,
                   worker_args: Sequence[str] = (), env: dict[str, str] | None = None
                   ) -> Transport:
    from vgi_vision.transports.http import HttpTransport
    from vgi_vision.transports.stdio import SubprocessTransport, worker_command
    from vgi_vision.transports.unix import UnixTransport

    if location is None:
        return SubprocessTransport(worker_command(*worker_args), env=env)
    if not isinstance(location, str):
        return SubprocessTransport(list(location), env=env)
    parsed = urlparse(location)
    if parsed.scheme == "unix":
        return UnixTransport(parsed.path)
    if parsed.scheme in ("http", "https"):
        return HttpTransport(location, auth_token=auth_token)
    raise ValueError(f"unsupported worker location {location!r}: use None, unix:///path or "
                     f"http://host:port")


class Client:
    def __init__(self, location: str | Sequence[str] | None = None, *,
                 auth_token: str | None = None, worker_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, transport: Transport | None = None) -> None:
        self.location = location
        self.transport = transport or open_transport(location, auth_token=auth_token,
                                                     worker_args=worker_args, env=env)
        self._catalog: dict[str, dict[str, Any]] | None = None
        self._worker_info: dict[str, Any] = {}
        self.requests = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def request(self, header: dict[str, Any], batch: pa.RecordBatch | None = None
                ) -> tuple[dict[str, Any], pa.RecordBatch | None]:
        """One round trip; raises WorkerError for an error response."""
        self.requests += 1
        raw = self.transport.roundtrip(encode(header, batch))
        try:
            message = decode(raw)
        except ProtocolError as exc:
            raise TransportError(f"the worker sent an unreadable response: {exc}") from None
        if not message.header.get("ok"):
            error = message.header.get("error") or {}
            raise WorkerError(str(error.get("kind", "internal")),
                              str(error.get("message", "unknown worker error")))
        return message.header, message.batch

    def describe(self) -> list[dict[str, Any]]:
        """The worker's catalog: every function with overloads, columns and docs."""
        if self._catalog is None:
            header, _ = self.request({"op": "describe"})
            self._catalog = {f["name"]: f for f in header["catalog"]}
            self._worker_info = dict(header.get("worker") or {})
        return list(self._catalog.values())

    def worker_info(self) -> dict[str, Any]:
        """What the worker says about itself: version, transport, and the serving model
        (name, precision, sha256, classes) with its device and execution provider."""
        self.describe()
        return dict(self._worker_info)

    def function(self, name: str) -> dict[str, Any]:
        self.describe()
        assert self._catalog is not None
        if name not in self._catalog:
            raise WorkerError("unknown_function", f"unknown function {name!r}")
        return self._catalog[name]

    def call(self, function: str, *columns: pa.Array) -> pa.Array:
        """A scalar function over argument columns: one result value per row."""
        chunk = self.function(function)["input_rows_per_call"]
        args = argument_rows(columns)
        results = []
        for start in range(0, max(args.num_rows, 1), chunk):
            _, batch = self.request({"op": "call", "function": function},
                                    args.slice(start, chunk))
            if batch is None:
                raise TransportError("the worker answered a call without a result")
            results.append(batch.column(0))
        return pa.concat_arrays(results) if len(results) != 1 else results[0]

    def scan(self, function: str, *columns: pa.Array, num_rows: int | None = None
             ) -> Iterator[pa.RecordBatch]:
        """A table function's batches, following continuations until the scan is done.

        Argument rows go in chunks of the function's ``input_rows_per_call``; ``input_row``
        in the output is rebased so it indexes the full argument batch.
        """
        chunk = self.function(function)["input_rows_per_call"]
        args = argument_rows(columns, num_rows)
        for start in range(0, args.num_rows, chunk):
            yield from self._scan_chunk(function, args.slice(start, chunk), start)

    def _scan_chunk(self, function: str, args: pa.RecordBatch, offset: int
                    ) -> Iterator[pa.RecordBatch]:
        token = None
        for _ in range(MAX_CONTINUATIONS):
            header, batch = self.request({"op": "scan", "function": function, "token": token},
                                         args)
            if batch is not None and batch.num_rows:
                yield _rebase(batch, offset) if offset else batch
            if header.get("done"):
                return
            token = header.get("token")
            if not token:
                raise TransportError("the worker returned neither a token nor done")
        raise TransportError(f"{function} did not finish after {MAX_CONTINUATIONS} requests")

    def table(self, function: str, *columns: pa.Array, num_rows: int | None = None
              ) -> pa.Table:
        """All rows of a table function call (``input_row`` included)."""
        batches = list(self.scan(function, *columns, num_rows=num_rows))
        if batches:
            return pa.Table.from_batches(batches)
        return self.wire_schema(function).empty_table()

    def wire_schema(self, function: str) -> pa.Schema:
        """What the worker's batches for ``function`` look like, from the catalog alone."""
        spec = self.function(function)
        fields = [pa.field(c["name"], arrow_type(c["type"])) for c in spec["columns"]]
        if spec["kind"] == "table":
            fields.insert(0, pa.field(INPUT_ROW, pa.int32()))
        return pa.schema(fields)


def _rebase(batch: pa.RecordBatch, offset: int) -> pa.RecordBatch:
    index = batch.schema.get_field_index(INPUT_ROW)
    shifted = pc.add(batch.column(index), pa.scalar(offset, pa.int32()))
    return batch.set_column(index, INPUT_ROW, shifted)

"""``Client(location)``: one client API over interchangeable transports and worker pools.

``None`` spawns a private subprocess worker (``workers=N``: a pool of them), ``unix:///path``
connects to a socket worker, ``http://host:port`` to an HTTP worker (or a load balancer in
front of several), and a list of those spreads requests over all of them. The client reads the
catalog once and uses it to cut big argument batches into sub-batches (the rows each function
asks for, within the worker's byte limits), keeps several in flight (``concurrency`` per
address), reassembles the results in input order and ties table rows back to argument rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.client.fanout import Failures, Member, NoWorkerAvailable, WorkerPool
from vgi_vision.client.locations import (
    DEFAULT_TIMEOUT_SECONDS,
    Location,
    Workers,
    private_members,
    remote_members,
)
from vgi_vision.client.responses import ScanProgress, checked_call_result, checked_scan_page
from vgi_vision.client.subbatch import WorkerLimits, split_points, without_unservable_values
from vgi_vision.errors import ProtocolError, TransportError, WorkerError
from vgi_vision.protocol import INPUT_ROW, ErrorKind, argument_rows, decode, encode
from vgi_vision.protocol.sqltypes import arrow_type
from vgi_vision.transports import Transport

#: Fewest rows a chunk is cut into to spread it over a pool. Smaller requests cost more than
#: spreading them gains: a round trip each, and a worker overlaps decoding with inference only
#: within a request of several model batches (4 images each).
MIN_BALANCED_ROWS = 16


class WorkerUnavailable(WorkerError, TransportError):
    """The worker is stopping and refused the request (kind ``unavailable``): it did no work,
    so a pool sends the request to another worker."""


class Client:
    """Calls worker functions over a pool of one or more workers.

    ``location``: None (private subprocess workers), an address, or a list of addresses.
    ``workers``: how many private workers (``"auto"``: one per core), only without location.
    ``concurrency``: requests in flight to each address (default 2).
    ``command``: the command line of a private worker, instead of ``vgi-vision serve``.
    ``timeout``: seconds a worker address may take to answer a request before it counts as
    failed (default 600); a scan, continuations included, must finish within it too.
    ``transport``: one transport object instead of a location, e.g. a worker in this process
    (:class:`~vgi_vision.transports.inprocess.InProcessTransport`), ``concurrency`` requests
    at once (default 1).
    """

    def __init__(self, location: Location = None, *, workers: Workers = None,
                 concurrency: int | None = None, auth_token: str | None = None,
                 worker_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 command: Sequence[str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 transport: Transport | None = None) -> None:
        self.location = location
        self.timeout = timeout
        if transport is not None:
            members = [Member("worker", transport, concurrency or 1)]
        elif location is None:
            if concurrency is not None:
                raise ValueError("concurrency applies to worker addresses; private workers "
                                 "take one request each: use workers=N")
            members = private_members(workers, worker_args=worker_args, command=command,
                                      env=env)
        else:
            if workers is not None or worker_args or command is not None:
                raise ValueError("workers and worker options start private workers; they "
                                 "do not apply to a worker location")
            members = remote_members(location, concurrency=concurrency, auth_token=auth_token,
                                     timeout=timeout)
        self.pool = WorkerPool(members)
        self._catalog: dict[str, dict[str, Any]] | None = None
        self._worker_info: dict[str, Any] = {}
        self.limits = WorkerLimits()
        self._sent = itertools.count()
        self.requests = 0  # requests sent so far (a retried one counts again)

    @property
    def transport(self) -> Transport:
        """Where a single request goes: the pool (least-loaded worker, with failover)."""
        return self.pool

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    def request(self, header: dict[str, Any], batch: pa.RecordBatch | None = None, *,
                transport: Transport | None = None
                ) -> tuple[dict[str, Any], pa.RecordBatch | None]:
        """One round trip (on ``transport``, else any worker); WorkerError for an error."""
        self.requests = next(self._sent) + 1
        raw = (transport or self.pool).roundtrip(encode(header, batch))
        try:
            message = decode(raw)
        except ProtocolError as exc:
            raise TransportError(f"the worker sent an unreadable response: {exc}") from None
        if not message.header.get("ok"):
            error = message.header.get("error") or {}
            kind = ErrorKind.from_wire(error.get("kind"))
            raise (WorkerUnavailable if kind is ErrorKind.UNAVAILABLE else WorkerError)(
                kind, str(error.get("message", "unknown worker error")))
        return message.header, message.batch

    def describe(self) -> list[dict[str, Any]]:
        """The worker's catalog: every function with overloads, columns and docs.

        Every worker of a pool is asked for its limits; the catalog is the first one's (the
        workers of one pool run the same version).
        """
        if self._catalog is None:
            answers, failures = [], Failures()
            for member in self.pool.members:
                try:
                    answers.append(self.request({"op": "describe"},
                                                transport=member.transport)[0])
                except TransportError as exc:  # a worker that is down now may serve later
                    failures.add(member, exc)
            if not answers:
                raise NoWorkerAvailable(f"no worker could serve the call: "
                                        f"{failures.summary()}")
            self.limits = WorkerLimits.tightest(
                [WorkerLimits.from_worker_info(a.get("worker", {})) for a in answers])
            self._catalog = {f["name"]: f for f in answers[0]["catalog"]}
            self._worker_info = dict(answers[0].get("worker") or {})
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
            raise WorkerError(ErrorKind.UNKNOWN_FUNCTION, f"unknown function {name!r}")
        return self._catalog[name]

    def sub_batches(self, function: str, args: pa.RecordBatch
                    ) -> list[tuple[int, pa.RecordBatch]]:
        """``(first row, rows)`` per request: the function's rows per call, within the
        worker's byte limits; values no worker would serve are sent as NULL."""
        rows_per_call = self.function(function)["input_rows_per_call"]
        if self.pool.capacity > 1:
            # Enough sub-batches to keep every slot busy twice over, so a slow worker does not
            # hold the tail of the chunk while the others idle; but not tiny ones.
            balanced = max(MIN_BALANCED_ROWS, -(-args.num_rows // (2 * self.pool.capacity)))
            rows_per_call = min(rows_per_call, balanced)
        args = without_unservable_values(args, self.limits)
        return [(start, args.slice(start, stop - start))
                for start, stop in split_points(args, rows_per_call, self.limits)]

    def call(self, function: str, *columns: pa.Array) -> pa.Array:
        """A scalar function over argument columns: one result value per row."""
        pieces = self.sub_batches(function, argument_rows(columns))
        expected = self.wire_schema(function)

        def call_piece(transport: Transport, piece: tuple[int, pa.RecordBatch]) -> pa.Array:
            _, batch = self.request({"op": "call", "function": function}, piece[1],
                                    transport=transport)
            return checked_call_result(batch, expected, function, piece[1].num_rows)

        results = list(self.pool.map(call_piece, pieces))
        return pa.concat_arrays(results) if len(results) != 1 else results[0]

    def scan(self, function: str, *columns: pa.Array, num_rows: int | None = None,
             job: str | None = None) -> Iterator[pa.RecordBatch]:
        """A table function's batches, following continuations until the scan is done.

        ``job`` (32 lowercase hex digits) names the write-back runs of every sub-batch as one
        job (:mod:`vgi_vision.worker.jobs`); a worker without write-back ignores it.

        Each sub-batch is one scan on one worker (continuations included), several in flight;
        batches come out in input order, with ``input_row`` rebased to index the full
        argument batch. A sub-batch whose worker fails is scanned again from its start on
        another worker, and only a finished scan's batches are used.
        """
        pieces = self.sub_batches(function, argument_rows(columns, num_rows))
        if len(pieces) == 1 and len(self.pool.members) == 1:
            # One scan on the only worker: there is nowhere to retry it, so its pages stream
            # as they arrive instead of waiting for the whole scan.
            start, rows = pieces[0]
            yield from self._scan_chunk(function, rows, start, self.pool.members[0].transport,
                                        job)
            return

        def scan_piece(transport: Transport, piece: tuple[int, pa.RecordBatch]
                       ) -> list[pa.RecordBatch]:
            return list(self._scan_chunk(function, piece[1], piece[0], transport, job))

        for batches in self.pool.map(scan_piece, pieces):
            yield from batches

    def _scan_chunk(self, function: str, args: pa.RecordBatch, offset: int,
                    transport: Transport, job: str | None = None
                    ) -> Iterator[pa.RecordBatch]:
        expected = self.wire_schema(function)
        progress = ScanProgress(function, self.timeout)
        token: str | None = None
        while True:
            request = {"op": "scan", "function": function, "token": token}
            header, batch = self.request({**request, "job": job} if job else request,
                                         args, transport=transport)
            if batch is not None:
                batch = checked_scan_page(batch, expected, function, args.num_rows)
                if batch.num_rows:
                    yield _rebase(batch, offset) if offset else batch
            token = progress.next_token(header, batch.num_rows if batch is not None else 0)
            if token is None:
                return

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

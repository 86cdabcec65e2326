"""A worker that answers wrongly must not hurt the client: no huge allocation, no hang, no
silently wrong rows.

The client is what is under test here, so the worker is a small fake one: a real unix socket
speaking the real wire protocol (frames, Arrow IPC messages), whose answers are scripted to be
hostile. Everything the client receives goes through the same transport and decoding as a real
worker's answers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.client.responses import MAX_PAGES_WITHOUT_ROWS, InvalidResponse
from vgi_vision.protocol import INPUT_ROW, ErrorKind, decode, encode, error_message
from vgi_vision.transports.framing import read_frame, write_frame

CATALOG = [
    {"name": "pages", "kind": "table", "input_rows_per_call": 64,
     "overloads": [{"params": [{"name": "x", "type": "INTEGER", "doc": "a number"}]}],
     "columns": [{"name": "label", "type": "VARCHAR", "doc": "a label"}],
     "description": "One labelled row per argument row.", "example": "SELECT 1"},
    {"name": "score", "kind": "scalar", "input_rows_per_call": 64,
     "overloads": [{"params": [{"name": "x", "type": "INTEGER", "doc": "a number"}]}],
     "columns": [{"name": "score", "type": "DOUBLE", "doc": "a score"}],
     "description": "A score per argument row.", "example": "SELECT 1"},
]
PAGE_SCHEMA = pa.schema([pa.field(INPUT_ROW, pa.int32()), pa.field("label", pa.string())])

#: What the fake worker answers to a call or scan: (header, batch) from the request's.
Answer = Callable[[dict[str, Any], pa.RecordBatch], bytes]


def page(input_rows: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(input_rows, pa.int32()), pa.array([f"row {r}" for r in input_rows])],
        schema=PAGE_SCHEMA)


def scan_answer(batch: pa.RecordBatch | None, *, done: bool) -> bytes:
    return encode({"ok": True, "done": done, "token": None if done else "more"}, batch)


class FakeWorker:
    """A unix-socket worker: a real ``describe`` of :data:`CATALOG`, scripted answers to the
    rest; counts the requests it answered."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.answer = answer
        self.requests = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def location(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader, \
                connection.makefile("wb") as writer:
            while (request := read_frame(reader, 1 << 30)) is not None:
                message = decode(request)
                if message.header["op"] == "describe":
                    write_frame(writer, encode({"ok": True, "catalog": CATALOG, "worker": {}}))
                    continue
                self.requests += 1
                assert message.batch is not None
                write_frame(writer, self.answer(message.header, message.batch))

    def close(self) -> None:
        self._server.close()


@contextmanager
def fake_worker(tmp_path: Path, answer: Answer) -> Iterator[FakeWorker]:
    worker = FakeWorker(tmp_path / "fake.sock", answer)
    try:
        yield worker
    finally:
        worker.close()


ARGS = pa.array([1, 2, 3], pa.int32())
#: Requests after which the never-ending fake scan stops answering pages, so a client that
#: ignores its deadline fails the test instead of hanging it.
GIVES_UP_AFTER = 100_000


@pytest.mark.parametrize("bad_row", [10**9, -1, 3], ids=["huge", "negative", "one-past"])
def test_scan_rows_must_answer_an_argument_row_that_was_sent(tmp_path: Path,
                                                             bad_row: int) -> None:
    with fake_worker(tmp_path, lambda h, b: scan_answer(page([0, 1, bad_row]), done=True)) \
            as worker, Client(worker.location) as client:
        with pytest.raises(InvalidResponse, match=f"{INPUT_ROW} values from .* 3 argument rows"):
            client.table("pages", ARGS)


def test_a_huge_input_row_fails_the_query_without_sizing_anything_by_it(tmp_path: Path
                                                                        ) -> None:
    """Through DuckDB, where rows are grouped per argument row by their ``input_row``: the
    query fails with the reason instead of allocating ~10^9 entries."""
    with fake_worker(tmp_path, lambda h, b: scan_answer(page([0, 10**9]), done=True)) \
            as worker:
        con = duckdb.connect()
        vgi_vision.attach(con, worker.location)
        try:
            with pytest.raises(duckdb.Error, match="input_row values from 0 to 1000000000"):
                con.sql("SELECT * FROM range(3) t(x), vision.pages(x::INTEGER)").fetchall()
            # the attachment still serves once the worker answers well
            worker.answer = lambda h, b: scan_answer(page(list(range(b.num_rows))), done=True)
            rows = con.sql("SELECT x, label FROM range(3) t(x), vision.pages(x::INTEGER) "
                           "ORDER BY x").fetchall()
            assert rows == [(0, "row 0"), (1, "row 1"), (2, "row 2")]
        finally:
            vgi_vision.detach(con)
            con.close()


def test_scan_rows_without_an_input_row_are_refused(tmp_path: Path) -> None:
    nulls = pa.RecordBatch.from_arrays([pa.array([0, None], pa.int32()), pa.array(["a", "b"])],
                                       schema=PAGE_SCHEMA)
    with fake_worker(tmp_path, lambda h, b: scan_answer(nulls, done=True)) as worker, \
            Client(worker.location) as client:
        with pytest.raises(InvalidResponse, match="without an input_row"):
            client.table("pages", ARGS)


def test_scan_pages_must_have_the_promised_columns(tmp_path: Path) -> None:
    other = pa.record_batch({INPUT_ROW: pa.array([0], pa.int32()), "label": pa.array([1.5])})
    with fake_worker(tmp_path, lambda h, b: scan_answer(other, done=True)) as worker, \
            Client(worker.location) as client:
        with pytest.raises(InvalidResponse, match="catalog promised"):
            client.table("pages", ARGS)


@pytest.mark.parametrize("result", [
    pa.record_batch({"score": pa.array([0.5, 0.25])}),  # one value short
    pa.record_batch({"score": pa.array([0.5, 0.25, 0.125, 1.0])}),  # one value too many
    pa.record_batch({"score": pa.array(["0.5", "0.25", "0.125"])}),  # not the promised type
    pa.record_batch({"other": pa.array([0.5, 0.25, 0.125])}),  # not the promised column
], ids=["short", "long", "wrong-type", "wrong-name"])
def test_scalar_results_are_one_value_of_the_promised_type_per_row(
        tmp_path: Path, result: pa.RecordBatch) -> None:
    with fake_worker(tmp_path, lambda h, b: encode({"ok": True}, result)) as worker, \
            Client(worker.location) as client:
        with pytest.raises(InvalidResponse, match="score"):
            client.call("score", ARGS)


def test_a_scan_of_empty_pages_that_never_ends_is_cut_off(tmp_path: Path) -> None:
    """``done: false`` forever, with no rows: stopped after a bounded number of pages."""
    with fake_worker(tmp_path, lambda h, b: scan_answer(None, done=False)) as worker, \
            Client(worker.location, timeout=30) as client:  # the deadline comes much later
        with pytest.raises(InvalidResponse, match="pages in a row without a row"):
            client.table("pages", ARGS)
        assert worker.requests == MAX_PAGES_WITHOUT_ROWS


def test_a_scan_that_never_ends_stops_at_the_call_timeout(tmp_path: Path) -> None:
    """``done: false`` forever, each page with a row: ``timeout`` bounds the whole scan, not
    each of its requests only."""
    def answer(header: dict[str, Any], batch: pa.RecordBatch) -> bytes:
        if worker.requests > GIVES_UP_AFTER:  # a client without a deadline gets this
            return error_message(ErrorKind.INTERNAL, "the fake worker gave up")
        return scan_answer(page([0]), done=False)

    with fake_worker(tmp_path, answer) as worker, \
            Client(worker.location, timeout=0.5) as client:
        with pytest.raises(InvalidResponse, match=r"within the timeout of 0\.5 s"):
            client.table("pages", ARGS)
        assert worker.requests > 1  # continuations were followed, then cut off


def test_a_well_behaved_scan_over_several_pages_is_served(tmp_path: Path) -> None:
    """The checks refuse nothing a worker may send: rows over several pages, an empty last
    page, an argument row with no rows."""
    def answer(header: dict[str, Any], batch: pa.RecordBatch) -> bytes:
        if header["token"] is None:
            return scan_answer(page([0, 0]), done=False)
        return scan_answer(page([2]), done=False) if header["token"] == "more" and \
            worker.requests == 2 else scan_answer(None, done=True)

    with fake_worker(tmp_path, answer) as worker, Client(worker.location) as client:
        table = client.table("pages", ARGS)
    assert table.column(INPUT_ROW).to_pylist() == [0, 0, 2]

"""Declared SQL types: parsing, rejection at registration, and the round trip into DuckDB.

The round trip uses toy functions (nothing vision-specific) served by the real dispatcher and
wire encoding, reached through the real binding, so each carried type is shown to arrive in
DuckDB as the type it was declared as.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import duckdb
import pyarrow as pa
import pytest

from vgi_vision.client.binding import attach, detach
from vgi_vision.client.client import Client
from vgi_vision.protocol import INPUT_ROW
from vgi_vision.protocol.sqltypes import UnsupportedType, arrow_type
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates
from vgi_vision.worker.registry import Args, Column, FunctionSpec, Output, Overload, Param, Registry
from vgi_vision.worker.state import CursorState


@pytest.mark.parametrize(("sql", "arrow"), [
    ("UBIGINT", pa.uint64()),
    ("FLOAT[1280]", pa.list_(pa.float32(), 1280)),
    ("varchar[]", pa.list_(pa.string())),
    ("INTEGER[2][]", pa.list_(pa.list_(pa.int32(), 2))),
    ('STRUCT(a INTEGER, "b ""c""" VARCHAR[], t TIMESTAMP)',
     pa.struct([("a", pa.int32()), ('b "c"', pa.list_(pa.string())),
                ("t", pa.timestamp("us"))])),
    ("STRUCT(inner STRUCT(x DOUBLE))", pa.struct([("inner", pa.struct([("x", pa.float64())]))])),
])
def test_carried_types_parse(sql: str, arrow: pa.DataType) -> None:
    assert arrow_type(sql) == arrow


@pytest.mark.parametrize("sql", ["HUGEINT", "FLOAT[0]", "FLOAT[99999999]", "FLOAT[", "FLOAT]",
                                 "STRUCT()", "STRUCT(a)", "STRUCT(a INTEGER, a DOUBLE)",
                                 "STRUCT(a INTEGER", "MAP(VARCHAR, INTEGER)", "", "INTEGER x",
                                 "DECIMAL(10, 2)", "STRUCT(a HUGEINT)"])
def test_uncarried_types_are_rejected_with_the_carried_ones_listed(sql: str) -> None:
    with pytest.raises(UnsupportedType, match="carried types are .*T\\[N\\]"):
        arrow_type(sql)


def scalar_spec(name: str, sql_type: str, impl, param_type: str = "INTEGER") -> FunctionSpec:
    return FunctionSpec(name=name, kind="scalar", overloads=(Overload((Param("x", param_type),)),),
                        columns=(Column("out", sql_type),), description="toy", example="",
                        impl=impl)


def test_registry_rejects_uncarried_parameter_and_column_types() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="f: parameter x: unsupported SQL type 'HUGEINT'"):
        registry.add(scalar_spec("f", "INTEGER", None, param_type="HUGEINT"))
    with pytest.raises(ValueError, match="g: column out: unsupported SQL type 'MAP"):
        registry.add(scalar_spec("g", "MAP(VARCHAR, INTEGER)", None))
    registry.add(scalar_spec("h", "FLOAT[3]", None))


INFO = "STRUCT(n INTEGER, taken TIMESTAMP, tags VARCHAR[])"
TAKEN = datetime(2024, 5, 17, 8, 30)


def vector(args: Args) -> pa.Array:
    xs = args["x"].to_pylist()
    return pa.array([None if x is None else [float(x), 0.0, 1.0] for x in xs],
                    arrow_type("FLOAT[3]"))


def info(args: Args) -> pa.Array:
    xs = args["x"].to_pylist()
    return pa.array([None if x is None else {"n": x, "taken": TAKEN if x else None,
                                             "tags": ["a"] * x} for x in xs],
                    arrow_type(INFO))


def big(args: Args) -> pa.Array:
    return pa.array([None if x is None else 2**64 - 1 - x for x in args["x"].to_pylist()],
                    pa.uint64())


def norm(args: Args) -> pa.Array:
    return pa.array([None if v is None else sum(x * x for x in v) ** 0.5
                     for v in args["x"].to_pylist()], pa.float64())


class Rows:
    """A table function whose rows carry a LIST and a STRUCT column."""

    state_type = CursorState

    def initial_state(self, args: Args) -> CursorState:
        return CursorState()

    def process(self, args: Args, state: CursorState, out: Output) -> None:
        rows = state.advance(args.num_rows, 64)
        xs = args["x"].to_pylist()[rows.start:rows.stop]
        out.emit(pa.RecordBatch.from_arrays(
            [pa.array(list(rows), pa.int32()),
             pa.array([[str(x)] * (x or 0) for x in xs], pa.list_(pa.string())),
             pa.array([{"n": x, "taken": None, "tags": []} for x in xs], arrow_type(INFO))],
            names=[INPUT_ROW, "tags", "info"]))
        out.finish()


class InProcess:
    """A transport that hands request bytes straight to a dispatcher (framework tests only)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.states = LiveStates()

    def roundtrip(self, request: bytes) -> bytes:
        return self.dispatcher.handle(request, self.states)

    def close(self) -> None:
        pass


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    registry = Registry()
    registry.add(scalar_spec("vector", "FLOAT[3]", vector))
    registry.add(scalar_spec("info", INFO, info))
    registry.add(scalar_spec("big", "UBIGINT", big))
    registry.add(scalar_spec("norm", "DOUBLE", norm, param_type="FLOAT[3]"))
    registry.add(FunctionSpec(name="rows", kind="table",
                              overloads=(Overload((Param("x", "INTEGER"),)),),
                              columns=(Column("tags", "VARCHAR[]"), Column("info", INFO)),
                              description="toy", example="", impl=Rows()))
    connection = duckdb.connect()
    attach(connection, client=Client(transport=InProcess(Dispatcher(registry))), name="toy")
    yield connection
    detach(connection, "toy")
    connection.close()


def test_nested_types_arrive_in_duckdb_as_declared(con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute("SELECT typeof(toy.vector(1)), typeof(toy.info(1)), typeof(toy.big(1))"
                       ).fetchone() == ("FLOAT[3]", INFO, "UBIGINT")
    assert con.execute("SELECT toy.vector(2), toy.info(2), toy.big(0)").fetchone() == \
        ((2.0, 0.0, 1.0), {"n": 2, "taken": TAKEN, "tags": ["a", "a"]}, 2**64 - 1)
    # NULL rows stay NULL; a NULL field inside a struct stays a NULL field
    assert con.execute("SELECT toy.vector(NULL), toy.info(NULL), toy.info(0).taken, "
                       "toy.big(NULL)").fetchone() == (None, None, None, None)
    # composes with DuckDB's own array and bit functions
    assert con.execute("SELECT array_cosine_similarity(toy.vector(1), toy.vector(1)), "
                       "bit_count(xor(toy.big(0), toy.big(3)))").fetchone() == \
        (pytest.approx(1.0), 2)


def test_table_function_keeps_list_and_struct_columns_whole(con: duckdb.DuckDBPyConnection
                                                            ) -> None:
    rows = con.execute("SELECT r.x, t.tags, t.info.n FROM range(3) r(x), "
                       "toy.rows(r.x::INTEGER) t ORDER BY r.x").fetchall()
    assert rows == [(0, [], 0), (1, ["1"], 1), (2, ["2", "2"], 2)]
    assert [d[1] for d in con.execute("SELECT * FROM toy.rows(2)").description] == \
        ["VARCHAR[]", INFO]


def test_nested_parameters_travel_too(con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute("SELECT toy.norm([3, 4, 0]::FLOAT[3]), toy.norm(toy.vector(0)), "
                       "toy.norm(NULL)").fetchone() == (5.0, 1.0, None)

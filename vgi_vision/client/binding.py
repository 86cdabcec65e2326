"""Attach a worker to a DuckDB connection: its functions become SQL under ``vision.``.

DuckDB's Python API has vectorized scalar UDFs but no Python table functions, so each worker
function becomes one hidden Arrow UDF plus a macro in an in-memory catalog named after the
attachment:

* a table function's UDF returns, per argument row, the list of its result rows as structs,
  and a table macro unnests them: ``SELECT * FROM vision.classify(x)`` and the lateral
  ``FROM photos p, vision.classify(p.image)`` both work, one worker call per DuckDB chunk;
* a scalar function's macro calls its UDF directly.

Overloads that differ in a parameter's type (BLOB bytes vs VARCHAR path) share one macro
parameter: the macro routes the value to a typed UDF slot with ``typeof``, which DuckDB fixes
at bind time. Everything here is generic: it reads ``Client.describe()`` and knows no function.
The in-memory catalog keeps macros out of the user's database file and goes away on detach.
"""

from __future__ import annotations

import atexit
import inspect
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.func import FunctionNullHandling, PythonUDFType

from vgi_vision.client.client import Client
from vgi_vision.client.locations import DEFAULT_TIMEOUT_SECONDS, Location, Workers
from vgi_vision.errors import BindingError, DetachedError
from vgi_vision.protocol import INPUT_ROW
from vgi_vision.transports import Transport

_attachments: dict[tuple[int, str], Attachment] = {}
# Re-entrant: a connection collected while attach() holds it runs _collected in this thread.
_lock = threading.RLock()
#: What registrations that could not be removed run on: the cursor that made them and their
#: callables. DuckDB keeps a UDF in the database after the connection object that registered it
#: is closed or gone, and drops what the UDF runs on with that object: a query would then call
#: freed memory. Kept here, such a UDF answers with a clear error instead.
_retired: list[object] = []


@dataclass
class Slot:
    """One UDF parameter: a macro parameter narrowed to one SQL type."""

    param: str
    type: str
    shared: bool  # the macro parameter accepts several types and is routed by typeof


@dataclass
class SqlFunction:
    """How one worker function maps onto a hidden UDF and a macro."""

    spec: dict[str, Any]
    required: list[str]
    optional: list[dict[str, Any]]
    slots: list[Slot]
    types_by_param: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> SqlFunction:
        overloads = [o["params"] for o in spec["overloads"]]
        required = [[p for p in o if "default" not in p] for o in overloads]
        optional = [[p for p in o if "default" in p] for o in overloads]
        if len({len(r) for r in required}) != 1 or \
                len({tuple((p["name"], p["type"], p["default"]) for p in o)
                     for o in optional}) != 1:
            raise BindingError(f"{spec['name']}: overloads must share their arity and their "
                               f"optional parameters to be bound as one macro")
        names = [r["name"] for r in required[0]]
        types_by_param: dict[str, list[str]] = {n: [] for n in names}
        for overload in required:
            for name, param in zip(names, overload, strict=True):
                if param["type"] not in types_by_param[name]:
                    types_by_param[name].append(param["type"])
        slots = [Slot(n, t, len(types_by_param[n]) > 1)
                 for n in names for t in types_by_param[n]]
        slots += [Slot(p["name"], p["type"], False) for p in optional[0]]
        return cls(spec, names, optional[0], slots, types_by_param)

    def macro_params(self) -> str:
        return ", ".join(self.required + [f"{p['name']} := {sql_literal(p['default'])}"
                                          for p in self.optional])

    def udf_args(self) -> str:
        return ", ".join(self._slot_expr(s) for s in self.slots)

    def _slot_expr(self, slot: Slot) -> str:
        if not slot.shared:
            return f"CAST({slot.param} AS {slot.type})"
        accepted = self.types_by_param[slot.param]
        known = ", ".join(sql_literal(t) for t in accepted + ['"NULL"'])
        message = sql_literal(f"{self.spec['name']}: {slot.param} must be "
                              f"{' or '.join(accepted)}, got ")
        return (f"if(typeof({slot.param}) = {sql_literal(slot.type)}, "
                f"try_cast({slot.param} AS {slot.type}), "
                f"if(typeof({slot.param}) IN ({known}), NULL, "
                f"error({message} || typeof({slot.param}))))")

    def arguments(self, columns: Sequence[pa.ChunkedArray | pa.Array]) -> list[pa.Array]:
        """Worker arguments from UDF slot columns: per macro parameter, the typed slot in use."""
        arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
                  for c in columns]
        chosen: list[pa.Array] = []
        position = 0
        for name in self.required + [p["name"] for p in self.optional]:
            width = len(self.types_by_param.get(name, [None]))
            group = arrays[position:position + width]
            position += width
            chosen.append(next((a for a in group if a.null_count < len(a)), group[0]))
        return chosen


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def duckdb_row_type(columns: list[dict[str, Any]]) -> duckdb.sqltypes.DuckDBPyType:
    return duckdb.list_type(duckdb.struct_type({c["name"]: c["type"] for c in columns}))


def group_rows(table: pa.Table, columns: list[str], num_rows: int) -> pa.Array:
    """Rows tagged with ``input_row`` -> one list of structs per argument row."""
    input_row = table.column(INPUT_ROW).to_numpy() if table.num_rows else \
        np.zeros(0, dtype=np.int32)
    order = np.argsort(input_row, kind="stable")
    fields = [table.column(c).combine_chunks().take(order) for c in columns]
    structs = pa.StructArray.from_arrays(fields, names=columns)
    counts = np.bincount(input_row, minlength=num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), structs)


@dataclass
class Attachment:
    """A live attachment: the client, the catalog name and what was registered.

    It holds the user's connection (or cursor) weakly, so one that is garbage collected
    without ``detach`` still stops its worker. Everything is registered through ``owner``, a
    cursor of its own that it holds strongly: the user may close or drop a cursor passed to
    ``attach`` while the functions it registered stay in the database, and DuckDB frees what a
    UDF runs on together with the connection object that registered it.
    """

    connection: weakref.ref
    owner: duckdb.DuckDBPyConnection
    name: str
    client: Client
    udfs: list[str] = field(default_factory=list)
    callables: list[Callable[..., pa.Array]] = field(default_factory=list)
    attached: bool = False  # the catalog is ours to detach
    closed: bool = False

    def register(self) -> None:
        try:
            self.owner.execute(f"ATTACH ':memory:' AS {quote(self.name)}")
        except duckdb.Error as exc:
            # Catalogs (and UDFs) belong to the database, so every cursor already sees a
            # worker attached through another connection of it; that one is left as it is.
            raise ValueError(f"cannot attach a worker as {self.name!r}: this database already "
                             f"has a catalog of that name (a worker attached through another "
                             f"connection or cursor of the same database serves every cursor;"
                             f" or pass name=...): {exc}") from None
        self.attached = True
        for spec in self.client.describe():
            self._register_function(spec)

    def _register_function(self, spec: dict[str, Any]) -> None:
        fn = SqlFunction.from_spec(spec)
        udf = f"__vgi_{self.name}_{spec['name']}"
        params = [s.type for s in fn.slots]
        if spec["kind"] == "table":
            names = [c["name"] for c in spec["columns"]]
            # A UDF without arguments cannot tell how many rows DuckDB wants (one per outer
            # row in a correlated subquery): a nullary table function's UDF takes a constant.
            args = fn.udf_args() or "true"
            self._create_udf(udf, table_udf(self, spec["name"], fn, names),
                             params or ["BOOLEAN"], duckdb_row_type(spec["columns"]))
            # Depth 2: the list of rows, then each row struct into columns; a LIST or STRUCT
            # result column stays one column.
            body = f"TABLE (SELECT unnest({udf}({args}), max_depth := 2))"
            comment_kind = "MACRO TABLE"
        else:
            self._create_udf(udf, scalar_udf(self, spec["name"], fn), params,
                             duckdb.sqltype(spec["columns"][0]["type"]))
            body = f"{udf}({fn.udf_args()})"
            comment_kind = "MACRO"
        self.udfs.append(udf)
        target = f"{quote(self.name)}.{quote(spec['name'])}"
        self.owner.execute(f"CREATE MACRO {target}({fn.macro_params()}) AS {body}")
        self.owner.execute(f"COMMENT ON {comment_kind} {target} IS {sql_literal(doc_text(spec))}")

    def _create_udf(self, name: str, udf: Callable[..., pa.Array], params: list[str],
                    returns: duckdb.sqltypes.DuckDBPyType) -> None:
        """A vectorized (Arrow) UDF that sees NULLs itself and is never constant-folded."""
        self.callables.append(udf)
        self.owner.create_function(name, udf, list(params), returns,
                                 type=PythonUDFType.ARROW,
                                 null_handling=FunctionNullHandling.SPECIAL,
                                 side_effects=True)

    def checked_client(self) -> Client:
        """The client, or a clear error once this attachment is closed."""
        if self.closed:
            raise DetachedError(f"the worker attached as {self.name!r} was detached (its "
                                f"connection or cursor was closed or collected): attach again")
        return self.client

    def close(self) -> None:
        self.closed = True
        try:
            if self.attached:
                self.owner.execute(f"DETACH {quote(self.name)}")
            for udf in self.udfs:
                self.owner.remove_function(udf)
            self.owner.close()
        except duckdb.Error:
            # Closed with the cursor it came from: the functions stay registered, so what
            # they run on must stay too (they now raise DetachedError).
            with _lock:
                _retired.append((self.owner, self.callables))
        finally:
            self.client.close()


def table_udf(attachment: Attachment, function: str, fn: SqlFunction, names: list[str]
              ) -> Callable[..., pa.Array]:
    """The UDF behind a table macro: per argument row, the list of its result rows."""

    def udf(*columns: pa.ChunkedArray) -> pa.Array:
        num_rows = len(columns[0])  # a nullary function's UDF gets one constant column
        table = attachment.checked_client().table(function, *fn.arguments(columns),
                                                  num_rows=num_rows)
        return group_rows(table, names, num_rows)

    return with_arity(udf, max(1, len(fn.slots)))


def scalar_udf(attachment: Attachment, function: str, fn: SqlFunction
               ) -> Callable[..., pa.Array]:
    def udf(*columns: pa.ChunkedArray) -> pa.Array:
        return attachment.checked_client().call(function, *fn.arguments(columns))

    return with_arity(udf, len(fn.slots))


def with_arity(fn: Callable[..., Any], arity: int) -> Callable[..., Any]:
    """DuckDB counts a UDF's parameters from its signature; give ``*args`` a fixed arity."""
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(arity)])
    return fn


def doc_text(spec: dict[str, Any]) -> str:
    columns = "; ".join(f"{c['name']} {c['type']}: {c['doc']}" for c in spec["columns"])
    return f"{spec['description']} Columns: {columns}. Example: {spec['example']}"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def worker_flags(options: dict[str, Any]) -> list[str]:
    """``attach`` keyword options as ``serve`` flags for a subprocess worker; a list or tuple
    repeats its flag (``data_root=["photos", "s3://bucket/photos/"]``)."""
    flags: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        for one in value if isinstance(value, (list, tuple)) else [value]:
            flags.append("--" + key.replace("_", "-"))
            if one is not True:
                flags.append(str(one))
    return flags


def attach(con: duckdb.DuckDBPyConnection, location: Location = None, name: str = "vision",
           *, workers: Workers = None, concurrency: int | None = None,
           timeout: float = DEFAULT_TIMEOUT_SECONDS, auth_token: str | None = None,
           client: Client | None = None, transport: Transport | None = None,
           **options: Any) -> Attachment:
    """Connect ``con`` to workers and register their functions as ``name.<function>``.

    ``location``: None spawns a private subprocess worker (``workers=N`` or ``"auto"``: a pool
    of them, each pinned to its own cores; ``options`` become their ``serve`` flags, e.g.
    ``data_root="photos"``); ``unix:///path`` or ``http://host:port`` connect to a running one
    (``concurrency`` requests in flight to it, default 2; one unanswered after ``timeout``
    seconds counts as failed); a list of addresses spreads every query over all of them.
    ``transport``: a transport object instead of a location, e.g. a worker in this process
    (:class:`~vgi_vision.transports.inprocess.InProcessTransport`); ``client``: a ready client.
    """
    if transport is not None and (location is not None or workers is not None or options):
        raise ValueError("transport= replaces location, workers and worker options: give one")
    if options and location is not None:
        raise ValueError(f"worker options {sorted(options)} apply to a subprocess worker only")
    key = (id(con), name)
    with _lock:
        if key in _attachments:
            raise ValueError(f"a worker is already attached as {name!r}; detach it first")
        client = client or Client(location, workers=workers, concurrency=concurrency,
                                  timeout=timeout, auth_token=auth_token,
                                  worker_args=worker_flags(options), transport=transport)
        attachment = Attachment(weakref.ref(con), con.cursor(), name, client)
        try:
            attachment.register()
        except BaseException:
            attachment.close()
            raise
        _attachments[key] = attachment
    # At exit, _detach_all closes what is left; the finalizer is for collection only.
    weakref.finalize(con, _collected, key, attachment).atexit = False
    return attachment


def _collected(key: tuple[int, str], attachment: Attachment) -> None:
    """The connection was garbage collected without ``detach``: unregister, stop its worker.

    Collection runs this in whatever thread allocates at that moment, which may be one that
    ``attach`` waits for while it holds ``_lock`` (a thread starting a private worker):
    waiting for the lock there would deadlock both, so then the work moves to a thread of
    its own. Otherwise (the usual case) it is done before collection returns.
    """
    if not _lock.acquire(blocking=False):
        threading.Thread(target=_forget, args=(key, attachment), name="vgi-collected",
                         daemon=True).start()
        return
    try:
        _forget(key, attachment)
    finally:
        _lock.release()


def _forget(key: tuple[int, str], attachment: Attachment) -> None:
    with _lock:
        if _attachments.get(key) is attachment:
            del _attachments[key]
    attachment.close()


def detach(con: duckdb.DuckDBPyConnection, name: str = "vision") -> None:
    """Unregister the functions and stop a subprocess worker that ``attach`` started."""
    with _lock:
        attachment = _attachments.pop((id(con), name), None)
    if attachment is None:
        raise ValueError(f"no worker is attached as {name!r}")
    attachment.close()


@atexit.register
def _detach_all() -> None:
    """Nothing is left running when the process exits."""
    with _lock:
        attachments = list(_attachments.values())
        _attachments.clear()
    for attachment in attachments:
        attachment.close()

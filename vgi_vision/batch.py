"""One catalog function over Arrow batches, for engines that bring their own scheduler.

A distributed engine (Ray Data, Daft) partitions a data set, runs a callable per batch in a
pool of actors, retries failed tasks and streams with back-pressure. What it needs from
vgi-vision is a picklable object that turns an Arrow batch into an Arrow batch:
:class:`BatchFunction`. It calls the same registry and function modules a worker serves,
through the ordinary :class:`~vgi_vision.client.client.Client`, in one of two modes:

* **in-process** (no ``location``): the first call builds a worker inside the calling
  process (the engine's actor), loading ``model`` on ``device`` with ``threads`` onnxruntime
  threads, which should be the CPUs the engine gave the actor, never the whole node's;
* **remote** (``location=`` one address or a list): the actor calls running workers over
  unix sockets or HTTP (``auth_token``, ``concurrency`` requests in flight per address).

Images come from one column, BLOB (``binary``) or path (``string``), as in SQL; the
function's other parameters are constants given by name (``top_k=3``). A NULL, empty or
undecodable image gives NULL (scalar functions) or no rows (table functions) for its row only;
a path naming no file fails the batch, naming the path, unless ``missing="null"``. A scalar
function adds one column, named after the function; a table function repeats each input row
once per result row (rows of one image in the function's order) and adds the function's
columns.

With ``lance=URI`` (in-process mode), every request a batch makes to a write-back function
(a batch is cut into the function's rows per call) is one all-or-nothing run merged on
``(image_key, model)``: an engine that retries a task, restarts an actor or re-runs the job
stores each image once (see docs/distributed.md).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from vgi_vision.client.binding import group_rows
from vgi_vision.client.client import Client
from vgi_vision.errors import BatchFunctionError
from vgi_vision.protocol import INPUT_ROW
from vgi_vision.protocol.sqltypes import arrow_type

T = TypeVar("T")

#: Staged rows younger than this are never rolled back by an engine worker that starts: with
#: many actors sharing a store, they may belong to a batch another actor is still writing.
#: Older ones are a killed actor's; :func:`clear_unfinished_runs` removes them after a job.
ENGINE_RECOVERY_GRACE_SECONDS = 600.0

#: Arrow types an image column may have, and the SQL parameter type each one feeds.
IMAGE_TYPES = {"BLOB": (pa.binary(), pa.large_binary()), "VARCHAR": (pa.string(),
                                                                      pa.large_string())}


class Opened(Generic[T]):
    """A resource opened on first use, closed by :meth:`close`, or when the process exits or
    its owner is collected, whichever comes first: an engine ends its actors without telling
    them, and an in-process worker must still drain and flush its write-back.

    It pickles as what opens it, never as the resource: the copy opens its own where used.
    """

    def __init__(self, opener: Callable[[], T], closer: Callable[[T], None]) -> None:
        self._opener, self._closer = opener, closer
        self._value: T | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._opener()
                self._finalizer = weakref.finalize(self, self._closer, self._value)
            return self._value

    def close(self) -> None:
        with self._lock:
            finalizer, self._value, self._finalizer = self._finalizer, None, None
        if finalizer is not None:
            finalizer()  # runs the closer once, whoever asks first

    def __getstate__(self) -> dict[str, Any]:
        return {"opener": self._opener, "closer": self._closer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["opener"], state["closer"])  # type: ignore[misc]


def as_table(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    return batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])


@dataclass(frozen=True)
class WorkerOptions:
    """Where a batch's calls go: a worker built in this process, or running workers.

    In-process: ``model``, ``device``, ``threads`` (onnxruntime and decode threads),
    ``lance`` (write-back store URI), ``data_root`` (confine path arguments: a folder, or a
    list of one folder and ``s3://`` URL prefixes). Remote:
    ``location`` (one address or a list), ``auth_token``, ``concurrency``, ``timeout``.
    """

    model: str | None = None
    device: str | None = None
    threads: int | None = None
    lance: str | None = None
    data_root: str | tuple[str, ...] | None = None
    location: str | tuple[str, ...] | None = None
    auth_token: str | None = None
    concurrency: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        local = ("model", "device", "threads", "lance", "data_root")
        remote = ("auth_token", "concurrency", "timeout")
        if self.location is not None:
            given = [name for name in local if getattr(self, name) is not None]
            if given:
                raise BatchFunctionError(f"{', '.join(given)} configure an in-process "
                                         f"worker; a remote worker (location=) has its own")
            if not isinstance(self.location, str):
                object.__setattr__(self, "location", tuple(self.location))
        if self.data_root is not None and not isinstance(self.data_root, str):
            object.__setattr__(self, "data_root", tuple(self.data_root))
        elif any(getattr(self, name) is not None for name in remote):
            raise BatchFunctionError("auth_token, concurrency and timeout apply to remote "
                                     "workers: give location= too")

    @classmethod
    def split(cls, options: dict[str, Any]) -> tuple[WorkerOptions, dict[str, Any]]:
        """These options, and the other keyword arguments (a function's parameters)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return (cls(**{k: v for k, v in options.items() if k in names}),
                {k: v for k, v in options.items() if k not in names})

    def _given(self, names: Sequence[str]) -> dict[str, Any]:
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def _transport(self) -> Any:
        from vgi_vision.transports.inprocess import InProcessTransport

        return InProcessTransport.start(
            warm_up=False, lance_recovery_grace=ENGINE_RECOVERY_GRACE_SECONDS,
            **self._given(("model", "device", "threads", "lance", "data_root")))

    def _location(self) -> str | list[str]:
        assert self.location is not None
        return self.location if isinstance(self.location, str) else list(self.location)

    def client(self) -> Client:
        if self.location is None:
            return Client(transport=self._transport())
        return Client(self._location(), **self._given(("auth_token", "concurrency",
                                                       "timeout")))

    def connection(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the ``vision`` functions, served as :meth:`client` would."""
        import vgi_vision

        con = duckdb.connect()
        if self.location is None:
            vgi_vision.attach(con, transport=self._transport())
        else:
            vgi_vision.attach(con, self._location(), **self._given(
                ("auth_token", "concurrency", "timeout")))
        return con

    @staticmethod
    def disconnect(con: duckdb.DuckDBPyConnection) -> None:
        """Stop the worker :meth:`connection` attached, and close the connection."""
        import vgi_vision

        vgi_vision.detach(con)
        con.close()


class BatchFunction:
    """``function`` of the vgi-vision catalog, applied to Arrow batches (picklable).

    ``image_column``: the column holding images (bytes) or image paths. ``output``: the
    result column of a scalar function (default: the function's name). Further keyword
    arguments are :class:`WorkerOptions` and the function's own parameters by name.
    """

    def __init__(self, function: str, image_column: str = "image", *,
                 output: str | None = None, **options: Any) -> None:
        self.function = function
        self.image_column = image_column
        self.output = output or function
        self.workers, self.params = WorkerOptions.split(options)
        self._client = Opened(self.workers.client, Client.close)

    @property
    def client(self) -> Client:
        """The client, built on first use (in-process: loading the model now)."""
        return self._client.get()

    def close(self) -> None:
        """Stop the in-process worker (flushing write-back) or the connections."""
        self._client.close()

    # -- the batch call ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        for spec in self.client.describe():
            if spec["name"] == self.function:
                return spec
        names = sorted(s["name"] for s in self.client.describe())
        raise BatchFunctionError(f"no function {self.function!r}; the catalog has: "
                                 f"{', '.join(names)}")

    def result_schema(self) -> pa.Schema:
        """The columns this function adds to a batch."""
        spec = self.spec()
        if spec["kind"] == "scalar":
            return pa.schema([(self.output, arrow_type(spec["columns"][0]["type"]))])
        return pa.schema([(c["name"], arrow_type(c["type"])) for c in spec["columns"]])

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """The batch with the function's result: one more column (scalar functions), or
        each row repeated per result row with the function's columns (table functions)."""
        table = as_table(batch)
        spec = self.spec()
        if spec["kind"] == "scalar":
            result = self.client.call(self.function, *self.arguments(spec, table)) \
                if table.num_rows else pa.array([], arrow_type(spec["columns"][0]["type"]))
            return table.append_column(self.output, result)
        rows = self._rows(spec, table)
        repeated = table.take(rows.column(INPUT_ROW))
        for name in (c["name"] for c in spec["columns"]):
            repeated = repeated.append_column(name, rows.column(name))
        return repeated

    def rows_per_image(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        """A table function's result as one list of row structs per input row."""
        table = as_table(batch)
        spec = self.spec()
        return group_rows(self._rows(spec, table), [c["name"] for c in spec["columns"]],
                          table.num_rows)

    def _rows(self, spec: dict[str, Any], table: pa.Table) -> pa.Table:
        """A table function's rows for ``table``, in input order (stable within a row)."""
        rows = self.client.table(self.function, *self.arguments(spec, table),
                                 num_rows=table.num_rows)
        return rows.take(np.argsort(rows.column(INPUT_ROW).to_numpy(), kind="stable"))

    def arguments(self, spec: dict[str, Any], table: pa.Table) -> list[pa.Array]:
        """The call's positional argument columns: the images, then each parameter."""
        if self.image_column not in table.column_names:
            raise BatchFunctionError(f"the batch has no column {self.image_column!r}; it has "
                                     f"{', '.join(table.column_names)}")
        images = table.column(self.image_column).combine_chunks()
        overload = self.overload(spec, images.type)
        columns = [images.cast(arrow_type(overload[0]["type"]))]
        unknown = set(self.params) - {p["name"] for p in overload[1:]}
        if unknown:
            raise BatchFunctionError(f"{self.function} has no parameter "
                                     f"{', '.join(sorted(unknown))}; it takes "
                                     f"{', '.join(p['name'] for p in overload[1:]) or 'none'}")
        for param in overload[1:]:
            if param["name"] not in self.params and "default" not in param:
                raise BatchFunctionError(f"{self.function} needs {param['name']}=")
            value = self.params.get(param["name"], param.get("default"))
            columns.append(pa.array([value] * table.num_rows, arrow_type(param["type"])))
        return columns

    def overload(self, spec: dict[str, Any], image_type: pa.DataType) -> list[dict[str, Any]]:
        """The overload whose first parameter takes ``image_type`` (bytes or a path)."""
        for candidate in spec["overloads"]:
            params = candidate["params"]
            if params and image_type in IMAGE_TYPES.get(params[0]["type"], ()):
                return list(params)
        raise BatchFunctionError(f"{self.function} takes no image column of type {image_type}"
                                 f" (binary for image bytes, string for paths)")


class BatchSQL:
    """A DuckDB query over each batch, with the ``vision`` functions attached (picklable).

    The batch is the table ``batch``; the query's result is the output batch. Keyword
    arguments are :class:`WorkerOptions`. The query must be row-local (each output row from
    rows of one batch), since an engine cuts a data set into batches as it likes.
    """

    def __init__(self, sql: str, **options: Any) -> None:
        self.sql = sql
        self.workers = WorkerOptions(**options)
        self._con = Opened(self.workers.connection, WorkerOptions.disconnect)
        self._lock = threading.Lock()  # one DuckDB connection: one query at a time

    def __getstate__(self) -> dict[str, Any]:
        return {"sql": self.sql, "workers": self.workers, "_con": self._con}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        table = as_table(batch)
        with self._lock:
            con = self._con.get()
            con.register("batch", table)
            try:
                return con.sql(self.sql).to_arrow_table()
            finally:
                con.unregister("batch")

    def close(self) -> None:
        self._con.close()


def clear_unfinished_runs(lance: str, *, model: str | None = None,
                          older_than_seconds: float = 0.0) -> None:
    """Delete the staged rows no run will commit: those of actors killed mid-batch.

    Call it when a job is over (with no writer left on the store, ``older_than_seconds=0``),
    or at any time with a bound longer than a batch takes. Stored images are never touched.
    """
    from vgi_vision.worker.lance.writeback import WriteBack
    from vgi_vision.worker.vision.model import load_classifier
    from vgi_vision.worker.vision.model_files import DEFAULT_MODEL

    dim = load_classifier(model or DEFAULT_MODEL).info.embedding_dim
    WriteBack(lance, dim, recovery_grace_seconds=older_than_seconds).close()

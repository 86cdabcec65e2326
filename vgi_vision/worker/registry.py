"""The transport-agnostic function registry.

Functions are declared once here: name, overloads (typed parameters with defaults), result
columns and documentation. The worker serves whatever a registry holds and a client builds its
SQL surface from ``Registry.describe()`` alone, so adding a function touches no transport and no
binding code.

Two kinds of function:

* scalar: vectorized, a batch of argument rows in, one Arrow array (one value per row) out;
* table: a generator. ``initial_state(args)`` returns a :class:`~vgi_vision.worker.state.ScanState`,
  then each ``process(args, state, out)`` tick emits at most one bounded batch and, once,
  finishes. Every output row carries ``input_row``, the argument row it belongs to, so a client
  can call a table function for a whole column of arguments at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa

from vgi_vision.errors import VgiVisionError
from vgi_vision.protocol import INPUT_ROW, ErrorKind, arrow_type
from vgi_vision.worker.state import ScanState

#: Rows a cursor-driven table function emits per tick unless it declares otherwise.
ROWS_PER_TICK = 64

REQUIRED: Any = object()


class FunctionError(VgiVisionError):
    """A structured, client-visible error. ``kind`` is stable; the message is for people."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Param:
    """One typed parameter; a numeric one may carry inclusive bounds (``min``, ``max``),
    checked by :meth:`FunctionSpec.resolve` for every non-NULL argument."""

    name: str
    type: str
    default: Any = REQUIRED
    doc: str = ""
    min: int | float | None = None
    max: int | float | None = None

    @property
    def optional(self) -> bool:
        return self.default is not REQUIRED

    @property
    def bounded(self) -> bool:
        return self.min is not None or self.max is not None

    def bounds_text(self) -> str:
        """The accepted range in words: ``between 1 and 1000``, ``at least 0``, ..."""
        low, high = _number(self.min), _number(self.max)
        if self.min is not None and self.max is not None:
            return f"between {low} and {high}"
        return f"at least {low}" if self.min is not None else f"at most {high}"

    def check(self, values: pa.Array) -> None:
        """Fail the call on the first argument outside the bounds; NULL passes."""
        if not self.bounded:
            return
        low = -math.inf if self.min is None else self.min
        high = math.inf if self.max is None else self.max
        for value in values.to_pylist():
            if value is not None and not low <= value <= high:  # NaN fails too
                raise FunctionError(f"{self.name} must be {self.bounds_text()}, got {value!r}",
                                    kind=ErrorKind.INVALID_ARGUMENT)

    def validate(self) -> None:
        """Refuse a declaration the registry cannot honour (see :meth:`Registry.add`)."""
        wanted = arrow_type(self.type)
        if not self.bounded:
            return
        numeric = pa.types.is_integer(wanted) or pa.types.is_floating(wanted)
        if not numeric:
            raise ValueError(f"bounds need a numeric type, not {self.type}")
        for bound in (self.min, self.max):
            if bound is not None and (isinstance(bound, bool)
                                      or not isinstance(bound, (int, float))
                                      or math.isnan(bound)):
                raise ValueError(f"bound {bound!r} is not a number")
            if bound is not None and pa.types.is_integer(wanted) and not isinstance(bound, int):
                raise ValueError(f"bound {bound!r} of an integer parameter is not an integer")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        # A default outside the bounds is allowed: top_k := 5 on a model of 4 classes fails
        # the calls that rely on it, with the bounds in the message, not the whole worker.

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "doc": self.doc,
                **({"default": self.default} if self.optional else {}),
                **({"min": self.min} if self.min is not None else {}),
                **({"max": self.max} if self.max is not None else {})}


def _number(value: int | float | None) -> str:
    """A bound as people write it: 0 and 1, not 0.0 and 1.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    doc: str = ""


@dataclass(frozen=True)
class Overload:
    params: tuple[Param, ...]

    def signature(self) -> str:
        return ", ".join(f"{p.name} {p.type}" + ("" if not p.optional else f" := {p.default!r}")
                         for p in self.params)

    def accepts(self, types: Sequence[pa.DataType]) -> bool:
        """True when ``types`` fill a prefix of the parameters and the rest have defaults."""
        if len(types) > len(self.params):
            return False
        if any(not p.optional for p in self.params[len(types):]):
            return False
        # types fill a prefix of the parameters: the rest have defaults
        return all(_coercible(t, arrow_type(p.type))
                   for t, p in zip(types, self.params[:len(types)], strict=True))


def _coercible(actual: pa.DataType, wanted: pa.DataType) -> bool:
    if actual == wanted or pa.types.is_null(actual):
        return True
    if pa.types.is_integer(wanted) and pa.types.is_integer(actual):
        return True
    if wanted == pa.binary() and pa.types.is_large_binary(actual):
        return True
    if wanted == pa.string() and pa.types.is_large_string(actual):
        return True
    return False


@dataclass(frozen=True)
class Args:
    """Argument rows of one call, every parameter present (defaults filled in)."""

    overload: Overload
    batch: pa.RecordBatch

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows

    def __getitem__(self, name: str) -> pa.Array:
        return self.batch.column(name)


class Output:
    """Collects what one tick produces: at most one batch, and whether the scan finished."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.batch: pa.RecordBatch | None = None
        self.finished = False

    def emit(self, batch: pa.RecordBatch) -> None:
        if self.finished:
            raise RuntimeError("emit() after finish()")
        if self.batch is not None:
            raise RuntimeError("a tick emits at most one batch")
        if not batch.schema.equals(self.schema):
            raise RuntimeError(f"emitted schema {batch.schema} differs from {self.schema}")
        self.batch = batch

    def finish(self) -> None:
        self.finished = True


S = TypeVar("S", bound=ScanState)


class TableImpl(Protocol[S]):
    state_type: type[S]

    def initial_state(self, args: Args) -> S: ...

    def process(self, args: Args, state: S, out: Output) -> None: ...


ScalarImpl = Callable[[Args], pa.Array]


@dataclass(frozen=True)
class FunctionSpec(Generic[S]):
    """One SQL-callable function and everything a client needs to know about it."""

    name: str
    kind: str  # "scalar" | "table"
    overloads: tuple[Overload, ...]
    columns: tuple[Column, ...]
    description: str
    example: str
    impl: Any = field(repr=False, compare=False)
    #: How many argument rows a client sends per call; more would only make the worker hold
    #: (or, over HTTP, re-receive) arguments it cannot yet use.
    input_rows_per_call: int = 2048

    @property
    def result_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in self.columns])

    @property
    def wire_schema(self) -> pa.Schema:
        """Schema of emitted batches: ``input_row`` then the result columns (tables only)."""
        if self.kind == "scalar":
            return self.result_schema
        return pa.schema([pa.field(INPUT_ROW, pa.int32())] + list(self.result_schema))

    def resolve(self, batch: pa.RecordBatch) -> Args:
        """Pick the overload for the argument columns and return complete, typed arguments."""
        types = [c.type for c in batch.columns]
        for overload in self.overloads:
            if overload.accepts(types):
                args = Args(overload, _complete(overload, batch))
                for param in overload.params:
                    param.check(args[param.name])
                return args
        got = ", ".join(str(t) for t in types) or "no arguments"
        wanted = "; ".join(f"{self.name}({o.signature()})" for o in self.overloads)
        raise FunctionError(f"no overload of {self.name} takes ({got}); candidates: {wanted}",
                            kind=ErrorKind.NO_MATCHING_OVERLOAD)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "example": self.example,
            "input_rows_per_call": self.input_rows_per_call,
            "overloads": [
                {"params": [p.describe() for p in o.params]}
                for o in self.overloads
            ],
            "columns": [{"name": c.name, "type": c.type, "doc": c.doc} for c in self.columns],
        }


def _complete(overload: Overload, batch: pa.RecordBatch) -> pa.RecordBatch:
    arrays = []
    for i, param in enumerate(overload.params):
        wanted = arrow_type(param.type)
        if i < batch.num_columns:
            try:
                arrays.append(batch.column(i).cast(wanted))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise FunctionError(f"argument {param.name}: {exc}") from exc
        else:
            arrays.append(pa.array([param.default] * batch.num_rows, type=wanted))
    names = [p.name for p in overload.params]
    # A nullary call keeps its row count: a zero-column batch still has rows in Arrow.
    return pa.RecordBatch.from_arrays(arrays, names=names) if arrays else batch.select([])


class Registry:
    """Named function specs; the catalog every transport serves."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionSpec] = {}

    def add(self, spec: FunctionSpec) -> FunctionSpec:
        if spec.name in self._functions:
            raise ValueError(f"function {spec.name} is already registered")
        if spec.kind not in ("scalar", "table"):
            raise ValueError(f"unknown function kind {spec.kind!r}")
        if spec.kind == "scalar" and len(spec.columns) != 1:
            raise ValueError("a scalar function returns exactly one column")
        declared: list[tuple[str, Callable[[], object]]] = [
            (f"parameter {p.name}", p.validate) for o in spec.overloads for p in o.params]
        declared += [(f"column {c.name}", functools.partial(arrow_type, c.type))
                     for c in spec.columns]
        for what, validate in declared:
            try:
                validate()
            except ValueError as exc:  # UnsupportedType is one
                raise ValueError(f"{spec.name}: {what}: {exc}") from None
        self._functions[spec.name] = spec
        return spec

    def get(self, name: str) -> FunctionSpec:
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionError(f"unknown function {name!r}; this worker serves: "
                                f"{', '.join(sorted(self._functions))}",
                                kind=ErrorKind.UNKNOWN_FUNCTION) from None

    def describe(self) -> list[dict[str, Any]]:
        return [spec.describe() for spec in self._functions.values()]

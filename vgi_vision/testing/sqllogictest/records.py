"""The records a ``.test`` file parses into, where they come from, and the runner's errors.

Records are immutable and carry their ``Location`` so that every report names
the line of the ``.test`` file it is about.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

import duckdb

Cleanup = Callable[[], None]
"""Called after the file finished (passed, failed or skipped)."""

Requirement = Callable[[duckdb.DuckDBPyConnection], Cleanup | None]
"""Prepares the connection for ``require NAME``; may return a cleanup callable."""


class SqlLogicTestError(Exception):
    """Base of every reportable problem; ``str()`` is the complete report.

    The pytest item prints it verbatim instead of a Python traceback, because
    the traceback would point into this runner rather than at the .test file.
    """


class SqlLogicParseError(SqlLogicTestError):
    """The file is malformed or uses a directive this runner does not support."""


class SqlLogicTestFailure(SqlLogicTestError):
    """A record's outcome differs from what the file expects."""


class SqlLogicTestSkip(Exception):
    """The file asked to be skipped (missing requirement or env variable).

    Kept separate from ``pytest.skip`` so the runner also works outside pytest.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a record starts; rendered as ``path:line`` (1-based) in reports."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class SortMode(enum.Enum):
    """How rows are ordered before comparison (``query II rowsort``)."""

    NOSORT = "nosort"
    ROWSORT = "rowsort"
    VALUESORT = "valuesort"


@dataclasses.dataclass(frozen=True)
class Statement:
    """``statement ok|error|maybe``.

    ``statement error`` needs an expected message (a substring, or a ``<REGEX>:``);
    ``statement maybe`` (``may_fail``) passes whether or not the SQL fails, but an error
    must match its message.
    """

    location: Location
    sql: str
    expect_error: bool
    expected_error: str = ""
    may_fail: bool = False


@dataclasses.dataclass(frozen=True)
class Query:
    """``query <types> [sort [label]]`` with the raw expected lines below ``----``.

    ``hash_threshold`` is the ``hash-threshold`` in force where the query was parsed
    (0: none); a ``label`` compares the result's hash with earlier queries of that label.
    """

    location: Location
    sql: str
    types: str
    sort_mode: SortMode
    expected: tuple[str, ...]
    label: str | None = None
    hash_threshold: int = 0


@dataclasses.dataclass(frozen=True)
class Require:
    """``require NAME [ARG...]``: set up via the requirement mapping, else skip the file.

    A requirement with arguments (``require vector_size 512``) is looked up by its whole
    text, ``"vector_size 512"``.
    """

    location: Location
    name: str
    args: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return " ".join((self.name, *self.args))


@dataclasses.dataclass(frozen=True)
class RequireEnv:
    """``require-env VAR [value]``: skip unless set; defines ``{VAR}`` (and ``${VAR}``).

    ``test-env VAR DEFAULT`` is one too (``default`` set): it never skips and defines
    ``VAR`` as ``DEFAULT``, since this runner has no test configuration to take it from.
    """

    location: Location
    variable: str
    value: str | None
    default: str | None = None


@dataclasses.dataclass(frozen=True)
class SetSeed:
    """``set seed VALUE``: ``SELECT setseed(VALUE)`` on the connection."""

    location: Location
    value: float


@dataclasses.dataclass(frozen=True)
class Loop:
    """``loop``/``foreach`` … ``endloop``.

    Both forms are one shape: per iteration, a value for each variable name.
    ``foreach type a b`` binds one name to each whole value (``decimal(4,1)`` is one
    value); only a name list with commas (``foreach a,b 1,x 2,y``) splits every value
    on its commas, as DuckDB does.
    """

    location: Location
    names: tuple[str, ...]
    iterations: tuple[tuple[str, ...], ...]
    body: tuple[Record, ...]


Record = Statement | Query | Require | RequireEnv | SetSeed | Loop

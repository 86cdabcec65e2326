"""The records a ``.test`` file parses into, where they come from, and the runner's errors.

Records are immutable and carry their ``Location`` so that every report names
the line of the ``.test`` file it is about.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

import duckdb

from vgi_vision.errors import VgiVisionError

Cleanup = Callable[[], None]
"""Called after the file finished (passed, failed or skipped)."""

Requirement = Callable[[duckdb.DuckDBPyConnection], Cleanup | None]
"""Prepares the connection for ``require NAME``; may return a cleanup callable."""


def duckdb_split(text: str, separator: str) -> list[str]:
    """``StringUtil::Split`` of DuckDB: empty pieces are dropped (``a\t\tb`` is two values),
    and a text with no non-empty piece is returned whole."""
    pieces = [piece for piece in text.split(separator) if piece]
    return pieces or [text]


class SqlLogicTestError(VgiVisionError):
    """Base of every reportable problem; ``str()`` is the complete report.

    The pytest item prints it verbatim instead of a Python traceback, because
    the traceback would point into this runner rather than at the .test file.
    """


class SqlLogicParseError(SqlLogicTestError):
    """The file is malformed or uses a directive this runner does not support."""


class SqlLogicTestFailure(SqlLogicTestError):
    """A record's outcome differs from what the file expects."""


class SqlLogicTestSkip(VgiVisionError):
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
    must match its message. A second word names a ``connection`` of its own to the
    database (``statement ok con1``), opened on first use.
    """

    location: Location
    sql: str
    expect_error: bool
    expected_error: str = ""
    may_fail: bool = False
    connection: str | None = None


@dataclasses.dataclass(frozen=True)
class Query:
    """``query <types> [sort [label]]`` with the raw expected lines below ``----``.

    ``hash_threshold`` is the ``hash-threshold`` in force where the query was parsed
    (0: none); a ``label`` compares the result's hash with earlier queries of that label.
    As in DuckDB, a second word that is no sort mode names a ``connection``
    (``query I con1``), and the label is then the third word.
    """

    location: Location
    sql: str
    types: str
    sort_mode: SortMode
    expected: tuple[str, ...]
    label: str | None = None
    hash_threshold: int = 0
    connection: str | None = None


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
    ``VAR`` as ``DEFAULT``, since this runner has no test configuration to take it from;
    so is ``set variable VAR VALUE``.
    """

    location: Location
    variable: str
    value: str | None
    default: str | None = None


@dataclasses.dataclass(frozen=True)
class Load:
    """``load PATH [readonly|readwrite [VERSION]]``: reopen on the database file at PATH
    (deleted first unless ``readonly``; in memory when there is no PATH), with the
    requirements met so far set up again on it. ``version`` is the storage version to
    write (``latest``, ``v1.0.0``...), kept for the next loads and restarts."""

    location: Location
    path: str
    read_only: bool
    version: str | None = None


@dataclasses.dataclass(frozen=True)
class Restart:
    """``restart [no_extension_load]``: reopen the current database, keeping the settings
    changed so far and (unless ``no_extension_load``) setting up the requirements again.
    ``reconnect`` (``reconnect=True``) only opens a new connection to the same database."""

    location: Location
    load_extensions: bool = True
    reconnect: bool = False


@dataclasses.dataclass(frozen=True)
class Unzip:
    """``unzip SOURCE.gz [TARGET]``: decompress a gzip file, by default to
    ``{TEST_DIR}/SOURCE`` without ``.gz`` (also when TARGET is ``NULL``)."""

    location: Location
    source: str
    target: str | None


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


Record = Statement | Query | Require | RequireEnv | SetSeed | Load | Restart | Unzip | Loop

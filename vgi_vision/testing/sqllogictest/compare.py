"""Run DuckDB sqllogictest files (``test/sql/*.test``) as pytest items.

Why: DuckDB extensions describe their SQL behaviour in DuckDB's sqllogictest
dialect, and DuckDB's own runner only exists inside its C++ unittest binary.
This module lets the same ``.test`` files run from pytest against the Python
``duckdb`` package, so they stay portable to DuckDB's runner while fitting
this project's Python test suite.

Layout: a parser turns the file into immutable records, a runner executes them
on a fresh in-memory connection, and a thin pytest layer (``collect_file``)
turns the outcome into pass / fail / skip. Anything the runner does not
implement fails loudly instead of silently passing.

Value rendering follows DuckDB's runner: every result column is cast to
VARCHAR by DuckDB itself (so doubles, decimals, blobs, lists, timestamps...
look exactly as DuckDB prints them), NULL becomes ``NULL``, the empty string
``(empty)``, NUL bytes ``\\0`` and booleans ``1``/``0``. Boolean cells are
displayed as ``true``/``false`` in failure reports and either spelling is
accepted in expected results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import enum
import hashlib
import math
import os
import pathlib
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence

import duckdb
import pytest

__all__ = [
    "Cleanup",
    "Location",
    "Loop",
    "Query",
    "Record",
    "Require",
    "RequireEnv",
    "Requirement",
    "SortMode",
    "SqlLogicParseError",
    "SqlLogicTestError",
    "SqlLogicTestFailure",
    "SqlLogicTestFile",
    "SqlLogicTestItem",
    "SqlLogicTestSkip",
    "Statement",
    "collect_file",
    "parse",
    "run_file",
]

Cleanup = Callable[[], None]
"""Called after the file finished (passed, failed or skipped)."""

Requirement = Callable[[duckdb.DuckDBPyConnection], Cleanup | None]
"""Prepares the connection for ``require NAME``; may return a cleanup callable."""


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


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
    """``statement ok|error``; an empty ``expected_error`` accepts any error."""

    location: Location
    sql: str
    expect_error: bool
    expected_error: str = ""


@dataclasses.dataclass(frozen=True)
class Query:
    """``query <types> [sort]`` with the raw expected lines below ``----``."""

    location: Location
    sql: str
    types: str
    sort_mode: SortMode
    expected: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Require:
    """``require NAME``: set up via the requirement mapping, else skip the file."""

    location: Location
    name: str


@dataclasses.dataclass(frozen=True)
class RequireEnv:
    """``require-env VAR [value]``: skip unless set; defines ``${VAR}``."""

    location: Location
    variable: str
    value: str | None


@dataclasses.dataclass(frozen=True)
class Loop:
    """``loop``/``foreach`` … ``endloop``.

    Both forms are one shape: per iteration, a value for each variable name
    (``foreach a,b 1,x 2,y`` binds two names at once, as DuckDB allows).
    """

    location: Location
    names: tuple[str, ...]
    iterations: tuple[tuple[str, ...], ...]
    body: tuple[Record, ...]


Record = Statement | Query | Require | RequireEnv | Loop


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------

_SEPARATOR = "----"
_SORT_MODES = {
    "nosort": SortMode.NOSORT,
    "rowsort": SortMode.ROWSORT,
    "sort": SortMode.ROWSORT,  # DuckDB's alias
    "valuesort": SortMode.VALUESORT,
}
# Directives that occupy exactly one line; DuckDB insists on a blank line or
# comment after them, which catches a forgotten blank line before a record.
_SINGLE_LINE = frozenset({"require", "require-env", "loop", "foreach", "endloop", "halt", "mode"})


def _is_blank(line: str) -> bool:
    return not line.strip()


def _is_blank_or_comment(line: str) -> bool:
    return _is_blank(line) or line.startswith("#")


def _unsupported(what: str, location: Location) -> SqlLogicParseError:
    return SqlLogicParseError(f"unsupported directive '{what}' at {location}")


class _Parser:
    """Single pass over the lines; loops nest through a stack of record lists."""

    def __init__(self, text: str, path: str) -> None:
        self._lines = [line.rstrip("\r") for line in text.split("\n")]
        self._path = path
        self._pos = 0
        self._blocks: list[list[Record]] = [[]]
        self._open_loops: list[tuple[Location, tuple[str, ...], tuple[tuple[str, ...], ...]]] = []
        self._skip_level = 0
        self._halted = False

    # -- helpers ----------------------------------------------------------

    def _location(self) -> Location:
        return Location(self._path, self._pos + 1)

    def _error(self, message: str) -> SqlLogicParseError:
        return SqlLogicParseError(f"{self._location()}: {message}")

    def _at_end(self) -> bool:
        return self._pos >= len(self._lines)

    def _tokens(self) -> list[str]:
        return self._lines[self._pos].split()

    def _seek_record(self) -> bool:
        while not self._at_end() and _is_blank_or_comment(self._lines[self._pos]):
            self._pos += 1
        return not self._at_end()

    def _read_sql(self) -> str:
        """SQL runs until a blank line, a comment or ``----`` (as in DuckDB)."""
        start = self._pos
        while not self._at_end():
            line = self._lines[self._pos]
            if _is_blank_or_comment(line) or line == _SEPARATOR:
                break
            self._pos += 1
        return "\n".join(self._lines[start : self._pos])

    def _read_after_separator(self) -> list[str] | None:
        """Lines after ``----`` up to an empty line; None when there is no ``----``.

        Only a truly empty line ends the block: a line of spaces or one
        starting with ``#`` can be a legitimate result value.
        """
        if self._at_end() or self._lines[self._pos] != _SEPARATOR:
            return None
        self._pos += 1
        start = self._pos
        while not self._at_end() and self._lines[self._pos] != "":
            self._pos += 1
        return self._lines[start : self._pos]

    def _skip_record(self) -> None:
        """Consume a record without interpreting it (skipif, mode skip)."""
        self._pos += 1
        self._read_sql()
        self._read_after_separator()

    def _check_separated(self) -> None:
        following = self._pos + 1
        if following < len(self._lines) and not _is_blank_or_comment(self._lines[following]):
            raise self._error("a single-line directive must be followed by an empty line")

    def _apply_conditions(self, tokens: list[str]) -> tuple[list[str], bool]:
        """Handle ``skipif``/``onlyif`` prefixes; this system is ``duckdb``."""
        excluded = False
        while tokens[0] in ("skipif", "onlyif"):
            if len(tokens) != 2:
                raise self._error(f"{tokens[0]} takes exactly one system name")
            if (tokens[1].lower() == "duckdb") == (tokens[0] == "skipif"):
                excluded = True
            self._pos += 1
            if self._at_end() or _is_blank_or_comment(self._lines[self._pos]):
                raise self._error(f"{tokens[0]} must be followed by a record")
            tokens = self._tokens()
        return tokens, excluded

    # -- driver -------------------------------------------------------------

    def parse(self) -> tuple[Record, ...]:
        while not self._halted and self._seek_record():
            tokens, excluded = self._apply_conditions(self._tokens())
            directive, args = tokens[0], tokens[1:]
            if excluded:
                self._skip_record()
                continue
            if directive in _SINGLE_LINE:
                self._check_separated()
            if directive == "mode":
                self._mode(args)
                continue
            if self._skip_level:
                self._skip_record()
                continue
            handler = self._HANDLERS.get(directive)
            if handler is None:
                raise _unsupported(directive, self._location())
            record = handler(self, args)
            if record is not None:
                self._blocks[-1].append(record)
        if self._open_loops:
            raise SqlLogicParseError(f"{self._open_loops[-1][0]}: loop without endloop")
        return tuple(self._blocks[0])

    # -- directives ---------------------------------------------------------

    def _statement(self, args: list[str]) -> Statement:
        location = self._location()
        if len(args) != 1 or args[0] not in ("ok", "error"):
            raise _unsupported(" ".join(["statement", *args]), location)
        self._pos += 1
        sql = self._read_sql()
        if not sql:
            raise SqlLogicParseError(f"{location}: statement without SQL")
        message = self._read_after_separator()
        if message is not None and args[0] == "ok":
            raise SqlLogicParseError(
                f"{location}: only 'statement error' can have an expected message"
            )
        return Statement(location, sql, args[0] == "error", "\n".join(message or []))

    def _query(self, args: list[str]) -> Query:
        location = self._location()
        if not args or not re.fullmatch(r"[A-Z]+", args[0]):
            raise SqlLogicParseError(
                f"{location}: query needs column types, one letter per column (e.g. 'query IT')"
            )
        if len(args) > 2 or (len(args) == 2 and args[1] not in _SORT_MODES):
            raise _unsupported(" ".join(["query", *args]), location)
        sort_mode = _SORT_MODES[args[1]] if len(args) == 2 else SortMode.NOSORT
        self._pos += 1
        sql = self._read_sql()
        if not sql:
            raise SqlLogicParseError(f"{location}: query without SQL")
        expected = self._read_after_separator() or []
        return Query(location, sql, args[0], sort_mode, tuple(expected))

    def _require(self, args: list[str]) -> Require:
        if len(args) != 1:
            raise self._error("require takes exactly one name")
        if self._open_loops:
            raise self._error("require cannot be used inside a loop")
        record = Require(self._location(), args[0])
        self._pos += 1
        return record

    def _require_env(self, args: list[str]) -> RequireEnv:
        if len(args) not in (1, 2):
            raise self._error("require-env takes a variable name and an optional value")
        if self._open_loops:
            raise self._error("require-env cannot be used inside a loop")
        record = RequireEnv(self._location(), args[0], args[1] if len(args) == 2 else None)
        self._pos += 1
        return record

    def _loop(self, args: list[str]) -> None:
        if len(args) != 3:
            raise self._error("expected 'loop NAME START END'")
        try:
            start, end = int(args[1]), int(args[2])
        except ValueError:
            raise self._error("loop bounds must be integers") from None
        self._open_loop((args[0],), tuple((str(i),) for i in range(start, end)))

    def _foreach(self, args: list[str]) -> None:
        if len(args) < 2:
            raise self._error("expected 'foreach NAME VALUE...'")
        names = tuple(args[0].split(","))
        iterations = []
        for value in args[1:]:
            if value.startswith("<") and value.endswith(">"):
                raise _unsupported(f"foreach group {value}", self._location())
            parts = tuple(value.split(","))
            if len(parts) != len(names):
                raise self._error(f"foreach value {value!r} does not match the names {args[0]!r}")
            iterations.append(parts)
        self._open_loop(names, tuple(iterations))

    def _open_loop(self, names: tuple[str, ...], iterations: tuple[tuple[str, ...], ...]) -> None:
        self._open_loops.append((self._location(), names, iterations))
        self._blocks.append([])
        self._pos += 1

    def _endloop(self, args: list[str]) -> Loop:
        if args:
            raise self._error("endloop takes no arguments")
        if not self._open_loops:
            raise self._error("endloop without loop")
        location, names, iterations = self._open_loops.pop()
        body = tuple(self._blocks.pop())
        self._pos += 1
        return Loop(location, names, iterations, body)

    def _halt(self, args: list[str]) -> None:
        if self._open_loops:
            raise self._error("halt inside a loop is not supported")
        self._halted = True

    def _mode(self, args: list[str]) -> None:
        if args == ["skip"]:
            self._skip_level += 1
        elif args == ["unskip"]:
            if not self._skip_level:
                raise self._error("mode unskip without mode skip")
            self._skip_level -= 1
        else:
            raise _unsupported(" ".join(["mode", *args]), self._location())
        self._pos += 1

    _HANDLERS: Mapping[str, Callable[[_Parser, list[str]], Record | None]] = {
        "statement": _statement,
        "query": _query,
        "require": _require,
        "require-env": _require_env,
        "loop": _loop,
        "foreach": _foreach,
        "endloop": _endloop,
        "halt": _halt,
    }


def parse(text: str, path: str = "<string>") -> tuple[Record, ...]:
    """Parse sqllogictest text into records; ``path`` is only used in messages.

    Parsing happens before anything runs, so an unsupported directive anywhere
    (outside ``mode skip`` and after ``halt`` excepted) fails the file up front.
    """
    return _Parser(text, path).parse()


# --------------------------------------------------------------------------
# Query results: rendering, sorting, comparing
# --------------------------------------------------------------------------

_FLOAT_TYPES = frozenset({"float", "double"})
_EXACT_NUMERIC_TYPES = frozenset(
    {
        "tinyint", "smallint", "integer", "bigint", "hugeint", "varint", "bignum",
        "utinyint", "usmallint", "uinteger", "ubigint", "uhugeint", "decimal",
    }
)  # fmt: skip
_HASH_LINE = re.compile(r"\d+ values hashing to [0-9a-z]{32}")
_BOOL_TOKENS = {"true": "1", "1": "1", "false": "0", "0": "0"}
_WIDE_DECIMALS = decimal.Context(prec=100)


@dataclasses.dataclass(frozen=True)
class _Column:
    """What the comparison needs to know about a result column."""

    name: str
    type_id: str
    scale: int = 0

    @classmethod
    def from_type(cls, name: str, sql_type: duckdb.sqltypes.DuckDBPyType) -> _Column:
        scale = dict(sql_type.children).get("scale", 0) if sql_type.id == "decimal" else 0
        return cls(name, sql_type.id, int(str(scale)))

    @property
    def is_bool(self) -> bool:
        return self.type_id == "boolean"


@dataclasses.dataclass(frozen=True)
class _Result:
    columns: tuple[_Column, ...]
    rows: list[list[str]]  # canonical cells, as DuckDB's runner renders them


def _render(value: str | None, column: _Column) -> str:
    """DuckDB runner's canonical cell text (also the input of the md5 hash)."""
    if value is None:
        return "NULL"
    if column.is_bool:
        return _BOOL_TOKENS[value]
    if value == "":
        return "(empty)"
    return value.replace("\0", "\\0")


def _fetch(conn: duckdb.DuckDBPyConnection, sql: str) -> _Result:
    """Run ``sql`` once and let DuckDB cast every column to VARCHAR.

    ``conn.sql`` gives a lazy relation for read-only queries (and a relation
    over the materialized output for anything else), so projecting the casts
    on top still executes the user's SQL exactly once, in its own order.
    """
    relation = conn.sql(sql)
    if relation is None:
        raise duckdb.InvalidInputException("the SQL returned no result set")
    columns = tuple(
        _Column.from_type(n, t) for n, t in zip(relation.columns, relation.types, strict=True)
    )
    casts = ", ".join(f"CAST(#{i} AS VARCHAR)" for i in range(1, len(columns) + 1))
    rows = relation.project(casts).fetchall()
    return _Result(
        columns, [[_render(v, c) for v, c in zip(row, columns, strict=True)] for row in rows]
    )


def _sort_key(cell: str, column: _Column) -> str:
    """Sort on DuckDB's canonical text, so ``true`` sorts like ``1``."""
    return _BOOL_TOKENS.get(cell.lower(), cell) if column.is_bool else cell


def _sorted(rows: list[list[str]], mode: SortMode, columns: Sequence[_Column]) -> list[list[str]]:
    if mode is SortMode.ROWSORT:
        return sorted(
            rows, key=lambda row: [_sort_key(c, col) for c, col in zip(row, columns, strict=True)]
        )
    if mode is SortMode.VALUESORT:
        cells = sorted(
            ((c, col) for row in rows for c, col in zip(row, columns, strict=True)),
            key=lambda p: _sort_key(*p),
        )
        values = [cell for cell, _ in cells]
        width = len(columns)
        return [values[i : i + width] for i in range(0, len(values), width)]
    return rows


def _result_hash(rows: list[list[str]]) -> str:
    """DuckDB's ``N values hashing to MD5``: md5 over each value + ``\\n``."""
    digest = hashlib.md5()
    count = 0
    for row in rows:
        for cell in row:
            digest.update(cell.encode("utf-8") + b"\n")
            count += 1
    return f"{count} values hashing to {digest.hexdigest()}"


def _split_row(line: str, width: int) -> list[str]:
    """Split an expected row: tabs as in DuckDB, else (leniently) spaces."""
    if width == 1:
        return [line]
    if "\t" in line:
        return line.split("\t")
    for pattern in (r" {2,}", r"\s+"):
        parts = re.split(pattern, line.strip())
        if len(parts) == width:
            return parts
    return [line]


def _expected_rows(lines: Sequence[str], width: int, actual_rows: int) -> list[list[str]]:
    """Expected rows from either layout DuckDB accepts.

    Rows are normally one line each; the classic sqllogictest layout lists one
    value per line instead, recognised (as DuckDB does) by the line count.
    """
    one_value_per_line = (
        width > 1
        and actual_rows > 0
        and len(lines) == actual_rows * width
        and not any("\t" in line for line in lines)
    )
    if one_value_per_line:
        return [list(lines[i : i + width]) for i in range(0, len(lines), width)]
    return [_split_row(line, width) for line in lines]


def _floats_match(actual: str, expected: str) -> bool:
    """DuckDB's ApproxEqual: relative 1% plus 1e-8, NaN equals NaN."""
    try:
        left, right = float(actual), float(expected)
    except ValueError:
        return False
    if math.isnan(left) and math.isnan(right):
        return True
    if not (math.isfinite(left) and math.isfinite(right)):
        return left == right
    return abs(left - right) <= abs(right) * 0.01 + 1e-8


def _exact_numbers_match(actual: str, expected: str, scale: int) -> bool:
    """Integers/decimals: round the expected text to the column scale, as a cast would."""
    try:
        left = decimal.Decimal(actual)
        quantum = decimal.Decimal(1).scaleb(-scale)
        right = decimal.Decimal(expected.strip()).quantize(
            quantum, decimal.ROUND_HALF_UP, _WIDE_DECIMALS
        )
    except decimal.InvalidOperation:
        return False
    return left == right


def _regex_matches(expected: str, text: str, *, full: bool) -> bool | None:
    """``<REGEX>:p`` / ``<!REGEX>:p``; None when ``expected`` is no regex."""
    for prefix, wanted in (("<REGEX>:", True), ("<!REGEX>:", False)):
        if expected.startswith(prefix):
            pattern = expected[len(prefix) :]
            match = re.fullmatch if full else re.search
            return (match(pattern, text, re.DOTALL) is not None) == wanted
    return None


def _cell_matches(actual: str, expected: str, column: _Column) -> bool:
    if actual == expected:
        return True
    regex = _regex_matches(expected, actual, full=True)
    if regex is not None:
        return regex
    if column.is_bool:
        return _BOOL_TOKENS.get(expected.lower(), "?") == actual
    if column.type_id in _FLOAT_TYPES:
        return _floats_match(actual, expected)
    if column.type_id in _EXACT_NUMERIC_TYPES:
        return _exact_numbers_match(actual, expected, column.scale)
    return False


# --------------------------------------------------------------------------
# Failure reports
# --------------------------------------------------------------------------

_MAX_SHOWN_ROWS = 40
Section = tuple[str, str]


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))


def _display(rows: list[list[str]], columns: Sequence[_Column]) -> list[list[str]]:
    """Actual rows as shown to people: booleans read ``true``/``false``."""
    spelled = {"1": "true", "0": "false"}
    return [
        [spelled.get(c, c) if col.is_bool else c for c, col in zip(row, columns, strict=True)]
        for row in rows
    ]


def _table(rows: list[list[str]], widths: Sequence[int], marked: int | None) -> str:
    """Aligned rows; the window follows the marked row so it is always shown."""
    if not rows:
        return "(no rows)"
    start = max(0, min((marked or 0) - 5, len(rows) - _MAX_SHOWN_ROWS))
    window = rows[start : start + _MAX_SHOWN_ROWS]
    lines = [f"... {start} rows above"] if start else []
    for index, row in enumerate(window, start):
        cells = [cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)]
        lines.append(("> " if index == marked else "  ") + "  ".join(cells).rstrip())
    hidden = len(rows) - start - len(window)
    if hidden:
        lines.append(f"... {hidden} more rows")
    return "\n".join(lines)


def _tables(
    expected: list[list[str]], actual: list[list[str]], marked: int | None = None
) -> list[Section]:
    """Expected and actual side by side in one shared column alignment."""
    widths: list[int] = []
    for row in [*expected, *actual]:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    return [
        (f"Expected ({len(expected)} rows)", _table(expected, widths, marked)),
        (f"Actual ({len(actual)} rows)", _table(actual, widths, marked)),
    ]


@dataclasses.dataclass(frozen=True)
class _Mismatch:
    summary: str
    sections: list[Section]


def _compare(query: Query, expected_lines: list[str], result: _Result) -> _Mismatch | None:
    """Check a query result against the expected lines; None when it passes."""
    columns = result.columns
    actual = _sorted(result.rows, query.sort_mode, columns)
    shown = _display(actual, columns)
    if len(columns) != len(query.types):
        return _Mismatch(
            f"query declares {len(query.types)} column(s) ('{query.types}') but the result "
            f"has {len(columns)}",
            _tables([line.split("\t") for line in expected_lines], shown),
        )
    if len(expected_lines) == 1 and _HASH_LINE.fullmatch(expected_lines[0]):
        actual_hash = _result_hash(actual)
        if actual_hash == expected_lines[0]:
            return None
        return _Mismatch(
            "wrong result hash",
            [
                ("Expected hash", expected_lines[0]),
                ("Actual hash", actual_hash),
                *_tables([], shown)[1:],
            ],
        )
    raw_expected = _expected_rows(expected_lines, len(columns), len(actual))
    for number, row in enumerate(raw_expected, 1):
        if len(row) != len(columns):
            return _Mismatch(
                f"expected row {number} has {len(row)} value(s) but the query has "
                f"{len(columns)} column(s)",
                _tables(raw_expected, shown, number - 1),
            )
    expected = _sorted(raw_expected, query.sort_mode, columns)
    if len(expected) != len(actual):
        return _Mismatch(
            f"expected {len(expected)} rows but got {len(actual)}", _tables(expected, shown)
        )
    for row_index, (want_row, got_row) in enumerate(zip(expected, actual, strict=True)):
        for col_index, (want, got, column) in enumerate(
            zip(want_row, got_row, columns, strict=True)
        ):
            if not _cell_matches(got, want, column):
                where = f"row {row_index + 1}, column {col_index + 1} ({column.name})"
                got_shown = shown[row_index][col_index]
                summary = f"wrong value at {where}: expected {want!r}, got {got_shown!r}"
                return _Mismatch(summary, _tables(expected, shown, row_index))
    return None


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


def _error_matches(expected: str, message: str) -> bool:
    """Substring match as DuckDB does, or ``<REGEX>:``/``<!REGEX>:`` searches."""
    regex = _regex_matches(expected, message, full=False)
    return expected in message if regex is None else regex


def _is_internal(error: duckdb.Error) -> bool:
    """Internal errors are engine bugs; like DuckDB, never accept them as expected."""
    return isinstance(error, duckdb.InternalException) or "INTERNAL Error" in str(error)


class _FileRunner:
    """Executes parsed records against one connection.

    Holds the per-file state DuckDB's runner keeps: ``${VAR}`` values from
    ``require-env``, the ``__TEST_DIR__`` directory, and the exit stack that
    runs requirement cleanups before the connection is closed.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        requirements: Mapping[str, Requirement],
        strict: bool,
        test_dir: str,
        cleanups: contextlib.ExitStack,
    ) -> None:
        self._conn = conn
        self._requirements = requirements
        self._strict = strict
        self._test_dir = test_dir
        self._cleanups = cleanups
        self._env: dict[str, str] = {}

    def run(self, records: Sequence[Record], loop_vars: Mapping[str, str]) -> None:
        for record in records:
            if isinstance(record, Statement):
                self._statement(record, loop_vars)
            elif isinstance(record, Query):
                self._query(record, loop_vars)
            elif isinstance(record, Loop):
                self._loop(record, loop_vars)
            elif isinstance(record, Require):
                self._require(record)
            else:
                self._require_env(record)

    def _substitute(self, text: str, loop_vars: Mapping[str, str]) -> str:
        for name, value in {**self._env, **loop_vars}.items():
            text = text.replace("${" + name + "}", value)
        return text.replace("__TEST_DIR__", self._test_dir).replace(
            "__WORKING_DIRECTORY__", os.getcwd()
        )

    @staticmethod
    def _failure(
        location: Location, loop_vars: Mapping[str, str], summary: str, sections: Sequence[Section]
    ) -> SqlLogicTestFailure:
        where = str(location)
        if loop_vars:
            where += " [" + ", ".join(f"{k}={v}" for k, v in loop_vars.items()) + "]"
        body = "".join(f"\n{title}:\n{_indent(text)}" for title, text in sections)
        return SqlLogicTestFailure(f"{where}: {summary}{body}")

    # -- records ------------------------------------------------------------

    def _statement(self, record: Statement, loop_vars: Mapping[str, str]) -> None:
        sql = self._substitute(record.sql, loop_vars)
        error = self._execute(sql)
        expected = self._substitute(record.expected_error, loop_vars)
        if error is None:
            if record.expect_error:
                raise self._failure(
                    record.location, loop_vars, "statement succeeded but an error was expected",
                    [("SQL", sql), ("Expected error", expected or "(any error)"),
                     ("Actual", "(no error)")],
                )  # fmt: skip
            return
        if not record.expect_error:
            raise self._failure(
                record.location,
                loop_vars,
                "statement failed",
                [("SQL", sql), ("Error", str(error))],
            )
        if _is_internal(error) or not self._error_matches(record, loop_vars, expected, str(error)):
            raise self._failure(
                record.location, loop_vars, "statement failed with an unexpected error",
                [("SQL", sql), ("Expected error", expected or "(any error)"),
                 ("Actual error", str(error))],
            )  # fmt: skip

    def _execute(self, sql: str) -> duckdb.Error | None:
        """Run to completion (``complete()`` also surfaces late runtime errors)."""
        try:
            self._conn.execute(sql)
            self._conn.complete()
        except duckdb.Error as error:
            return error
        return None

    def _error_matches(
        self, record: Statement, loop_vars: Mapping[str, str], expected: str, message: str
    ) -> bool:
        try:
            return _error_matches(expected, message)
        except re.error as exc:
            raise self._failure(
                record.location, loop_vars, f"invalid regular expression: {exc}", []
            ) from None

    def _query(self, record: Query, loop_vars: Mapping[str, str]) -> None:
        sql = self._substitute(record.sql, loop_vars)
        expected = [self._substitute(line, loop_vars) for line in record.expected]
        try:
            result = _fetch(self._conn, sql)
        except duckdb.Error as error:
            raise self._failure(
                record.location, loop_vars, "query failed",
                [("SQL", sql), ("Expected", "\n".join(expected) or "(no rows)"),
                 ("Error", str(error))],
            ) from None  # fmt: skip
        try:
            mismatch = _compare(record, expected, result)
        except re.error as exc:
            raise self._failure(
                record.location, loop_vars, f"invalid regular expression: {exc}", []
            ) from None
        if mismatch is not None:
            summary = f"{mismatch.summary} (query {record.types} {record.sort_mode.value})"
            raise self._failure(
                record.location, loop_vars, summary, [("SQL", sql), *mismatch.sections]
            )

    def _loop(self, record: Loop, loop_vars: Mapping[str, str]) -> None:
        for values in record.iterations:
            self.run(record.body, {**loop_vars, **dict(zip(record.names, values, strict=True))})

    def _require(self, record: Require) -> None:
        setup = self._requirements.get(record.name)
        if setup is None:
            if self._strict:
                raise SqlLogicTestFailure(
                    f"{record.location}: require {record.name}: no such requirement is "
                    f"registered (strict mode)"
                )
            raise SqlLogicTestSkip(f"require {record.name}")
        cleanup = setup(self._conn)
        if cleanup is not None:
            self._cleanups.callback(cleanup)

    def _require_env(self, record: RequireEnv) -> None:
        actual = os.environ.get(record.variable)
        if actual is None:
            raise SqlLogicTestSkip(f"require-env {record.variable}")
        if record.value is not None and actual != record.value:
            raise SqlLogicTestSkip(f"require-env {record.variable} {record.value}")
        if record.variable in self._env:
            raise SqlLogicTestFailure(
                f"{record.location}: environment variable {record.variable} is already defined"
            )
        self._env[record.variable] = actual


def run_file(
    path: str | os.PathLike[str],
    requirements: Mapping[str, Requirement] | None = None,
    *,
    strict: bool = False,
    display_path: str | None = None,
) -> None:
    """Run one .test file on a fresh in-memory connection.

    Returns normally when the file passes (or halts). Raises
    ``SqlLogicParseError``/``SqlLogicTestFailure`` with a full report, or
    ``SqlLogicTestSkip``. Requirement cleanups run (newest first), then the
    connection is closed and ``__TEST_DIR__`` removed, whatever the outcome.
    """
    path = pathlib.Path(path)
    records = parse(path.read_text(encoding="utf-8"), display_path or str(path))
    with contextlib.ExitStack() as stack:
        test_dir = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="sqllogictest-", ignore_cleanup_errors=True)
        )
        conn = duckdb.connect()
        stack.callback(conn.close)
        _FileRunner(conn, requirements or {}, strict, test_dir, stack).run(records, {})


# --------------------------------------------------------------------------
# pytest integration
# --------------------------------------------------------------------------


class SqlLogicTestItem(pytest.Item):
    """One .test file as one test; failures print the runner's report."""

    def __init__(
        self, *, requirements: Mapping[str, Requirement], strict: bool, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._requirements = requirements
        self._strict = strict

    def _display_path(self) -> str:
        try:
            return str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            return str(self.path)

    def runtest(self) -> None:
        try:
            run_file(
                self.path,
                self._requirements,
                strict=self._strict,
                display_path=self._display_path(),
            )
        except SqlLogicTestSkip as skip:
            reason = skip.reason
        else:
            return
        # Report the skip at the .test file, not at this module, the way
        # pytest reports skips coming from markers.
        raise pytest.skip.Exception(reason, _use_item_location=True)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: str | None = None
    ) -> str:
        if isinstance(excinfo.value, SqlLogicTestError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))  # type: ignore[arg-type]

    def reportinfo(self) -> tuple[pathlib.Path, int, str]:
        return self.path, 0, f"sqllogictest: {self._display_path()}"


class SqlLogicTestFile(pytest.File):
    """A collected .test file: one ``SqlLogicTestItem`` per variant of its requirements."""

    def __init__(
        self, *, variants: Mapping[str, Mapping[str, Requirement]], strict: bool, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._variants = variants
        self._strict = strict

    def collect(self) -> Iterator[SqlLogicTestItem]:
        for variant, requirements in self._variants.items():
            name = f"{self.path.name}[{variant}]" if variant else self.path.name
            yield SqlLogicTestItem.from_parent(
                self, name=name, requirements=requirements, strict=self._strict
            )


def collect_file(
    parent: pytest.Collector,
    file_path: pathlib.Path,
    requirements: Mapping[str, Requirement],
    *,
    strict: bool = False,
    variants: Mapping[str, Mapping[str, Requirement]] | None = None,
) -> pytest.File | None:
    """Collector for ``pytest_collect_file``: a File node for ``*.test``, else None.

    ``requirements`` maps ``require NAME`` to a setup callable (which may
    return a cleanup). Unknown names skip the file, as in DuckDB, unless
    ``strict`` is set, in which case they fail it. ``variants`` runs the file
    once per entry instead, each with its own requirements, as items named
    ``file.test[variant]`` (e.g. the same SQL over several transports).
    """
    if file_path.suffix != ".test":
        return None
    return SqlLogicTestFile.from_parent(
        parent, path=file_path, variants=variants or {"": requirements}, strict=strict
    )

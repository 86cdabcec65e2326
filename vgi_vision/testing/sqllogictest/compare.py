"""Query results: rendering values as DuckDB's runner does, sorting, hashing, comparing.

Value rendering follows DuckDB's runner: every result column is cast to
VARCHAR by DuckDB itself (so doubles, decimals, blobs, lists, timestamps...
look exactly as DuckDB prints them), NULL becomes ``NULL``, the empty string
``(empty)``, NUL bytes ``\\0`` and booleans ``1``/``0``. Boolean cells are
displayed as ``true``/``false`` in failure reports and either spelling is
accepted in expected results.
"""

from __future__ import annotations

import dataclasses
import decimal
import hashlib
import math
import re
from collections.abc import Sequence

import duckdb

from vgi_vision.testing.sqllogictest.records import Query, SortMode, duckdb_split

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
class Column:
    """What the comparison needs to know about a result column."""

    name: str
    type_id: str
    scale: int = 0

    @classmethod
    def from_type(cls, name: str, sql_type: duckdb.sqltypes.DuckDBPyType) -> Column:
        scale = dict(sql_type.children).get("scale", 0) if sql_type.id == "decimal" else 0
        return cls(name, sql_type.id, int(str(scale)))

    @property
    def is_bool(self) -> bool:
        return self.type_id == "boolean"


@dataclasses.dataclass(frozen=True)
class Result:
    columns: tuple[Column, ...]
    rows: list[list[str]]  # canonical cells, as DuckDB's runner renders them


def _render(value: str | None, column: Column) -> str:
    """DuckDB runner's canonical cell text (also the input of the md5 hash)."""
    if value is None:
        return "NULL"
    if column.is_bool:
        return _BOOL_TOKENS[value]
    if value == "":
        return "(empty)"
    return value.replace("\0", "\\0")


def fetch(conn: duckdb.DuckDBPyConnection, sql: str) -> Result:
    """Run ``sql`` once and let DuckDB cast every column to VARCHAR.

    ``conn.sql`` gives a lazy relation for read-only queries (and a relation
    over the materialized output for anything else), so projecting the casts
    on top still executes the user's SQL exactly once, in its own order.
    """
    relation = conn.sql(sql)
    if relation is None:
        raise duckdb.InvalidInputException("the SQL returned no result set")
    columns = tuple(
        Column.from_type(n, t) for n, t in zip(relation.columns, relation.types, strict=True)
    )
    casts = ", ".join(f"CAST(#{i} AS VARCHAR)" for i in range(1, len(columns) + 1))
    rows = relation.project(casts).fetchall()
    return Result(
        columns, [[_render(v, c) for v, c in zip(row, columns, strict=True)] for row in rows]
    )


def _sorted(rows: list[list[str]], mode: SortMode) -> list[list[str]]:
    """Sort the result as DuckDB's runner does, on the rendered text (booleans are ``1``/``0``).

    Only the result is sorted: the expected lines must already be in that order, since
    DuckDB's runner compares them as written.
    """
    if mode is SortMode.ROWSORT:
        return sorted(rows)
    if mode is SortMode.VALUESORT:
        values = sorted(cell for row in rows for cell in row)
        width = len(rows[0]) if rows else 1
        return [values[i : i + width] for i in range(0, len(values), width)]
    return rows


def is_hash(lines: Sequence[str]) -> bool:
    """Expected results given as DuckDB's ``N values hashing to MD5`` line."""
    return len(lines) == 1 and _HASH_LINE.fullmatch(lines[0]) is not None


def result_hash(query: Query, result: Result) -> str:
    """DuckDB's ``N values hashing to MD5``: md5 over each (sorted) value + ``\\n``.

    N counts every value of every column, whatever the query header declares.
    """
    digest = hashlib.md5()
    count = 0
    for row in _sorted(result.rows, query.sort_mode):
        for cell in row:
            digest.update(cell.encode("utf-8") + b"\n")
            count += 1
    return f"{count} values hashing to {digest.hexdigest()}"


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


def regex_matches(expected: str, text: str, *, full: bool) -> bool | None:
    """``<REGEX>:p`` / ``<!REGEX>:p``; None when ``expected`` is no regex."""
    for prefix, wanted in (("<REGEX>:", True), ("<!REGEX>:", False)):
        if expected.startswith(prefix):
            pattern = expected[len(prefix) :]
            match = re.fullmatch if full else re.search
            return (match(pattern, text, re.DOTALL) is not None) == wanted
    return None


def _cell_matches(actual: str, expected: str, column: Column) -> bool:
    if actual == expected:
        return True
    regex = regex_matches(expected, actual, full=True)
    if regex is not None:
        return regex
    if column.is_bool:
        return _BOOL_TOKENS.get(expected.lower(), "?") == actual
    if column.type_id in _FLOAT_TYPES:
        return _floats_match(actual, expected)
    if column.type_id in _EXACT_NUMERIC_TYPES:
        return _exact_numbers_match(actual, expected, column.scale)
    return False


_MAX_SHOWN_ROWS = 40
Section = tuple[str, str]


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))


def _display(rows: list[list[str]], columns: Sequence[Column]) -> list[list[str]]:
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
class Mismatch:
    summary: str
    sections: list[Section]


def _expected_rows(lines: Sequence[str], width: int, actual_rows: int) -> list[list[str]] | str:
    """Expected rows from either layout DuckDB accepts, or why they do not form rows.

    As in DuckDB's ``result_helper.cpp``: the lines are rows (values split on tabs) when
    there is one line per result row (for more than one column) or every line holds a
    tab; otherwise each line is one value, filled into rows of ``width`` values. Like
    DuckDB, empty pieces between tabs are dropped (write an empty string as ``(empty)``).
    """
    row_wise = (width > 1 and len(lines) == actual_rows) or all("\t" in line for line in lines)
    if row_wise:
        return [duckdb_split(line, "\t") for line in lines]
    if len(lines) % width:
        return f"{len(lines)} expected values (one per line) do not fill rows of {width} column(s)"
    return [list(lines[i : i + width]) for i in range(0, len(lines), width)]


def _compare_values(
    expected_lines: list[str], actual: list[list[str]], columns: Sequence[Column]
) -> Mismatch | None:
    shown = _display(actual, columns)
    expected = _expected_rows(expected_lines, len(columns), len(actual))
    if isinstance(expected, str):
        return Mismatch(expected, _tables([[line] for line in expected_lines], shown))
    if len(expected) != len(actual):
        return Mismatch(
            f"expected {len(expected)} rows but got {len(actual)}", _tables(expected, shown)
        )
    for number, row in enumerate(expected, 1):
        if len(row) != len(columns):
            return Mismatch(
                f"expected row {number} has {len(row)} value(s) but the query has "
                f"{len(columns)} column(s)",
                _tables(expected, shown, number - 1),
            )
    for row_index, (want_row, got_row) in enumerate(zip(expected, actual, strict=True)):
        for col_index, (want, got, column) in enumerate(
            zip(want_row, got_row, columns, strict=True)
        ):
            if not _cell_matches(got, want, column):
                where = f"row {row_index + 1}, column {col_index + 1} ({column.name})"
                got_shown = shown[row_index][col_index]
                summary = f"wrong value at {where}: expected {want!r}, got {got_shown!r}"
                return Mismatch(summary, _tables(expected, shown, row_index))
    return None


def compare(query: Query, expected_lines: list[str], result: Result) -> Mismatch | None:
    """Check a query result against the expected lines; None when it passes.

    An expected hash is compared over all the result's values, whatever the number of
    columns the header declares (DuckDB's runner does not check it then). Expected values
    are compared with the result's real column count, and a header that declares another
    count fails even when they match, as in DuckDB, with the header to write instead.
    """
    columns = result.columns
    actual = _sorted(result.rows, query.sort_mode)
    shown = _display(actual, columns)
    if is_hash(expected_lines):
        actual_hash = result_hash(query, result)
        if actual_hash == expected_lines[0]:
            return None
        return Mismatch(
            "wrong result hash",
            [
                ("Expected hash", expected_lines[0]),
                ("Actual hash", actual_hash),
                *_tables([], shown)[1:],
            ],
        )
    mismatch = _compare_values(expected_lines, actual, columns)
    if len(columns) == len(query.types):
        return mismatch
    declared = (
        f"query declares {len(query.types)} column(s) ('{query.types}') but the result "
        f"has {len(columns)}"
    )
    if mismatch is None:
        declared += (
            f"; the expected values match the result otherwise: declare 'query "
            f"{'I' * len(columns)}' (DuckDB's runner fails this too)"
        )
    return Mismatch(declared, _tables([duckdb_split(line, "\t") for line in expected_lines], shown))

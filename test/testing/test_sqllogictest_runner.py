"""Tests of the sqllogictest runner itself, on small .test files and real DuckDB."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import textwrap
from collections.abc import Callable

import duckdb
import pytest

from vgi_vision.testing.sqllogictest import (
    Loop,
    Query,
    SortMode,
    SqlLogicParseError,
    SqlLogicTestFailure,
    SqlLogicTestSkip,
    Statement,
    parse,
    run_file,
)

pytest_plugins = ["pytester"]


def write(directory: pathlib.Path, text: str, name: str = "case.test") -> pathlib.Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run(directory: pathlib.Path, text: str, **kwargs: object) -> None:
    run_file(write(directory, text), display_path="case.test", **kwargs)  # type: ignore[arg-type]


def failure(directory: pathlib.Path, text: str, **kwargs: object) -> str:
    with pytest.raises(SqlLogicTestFailure) as excinfo:
        run(directory, text, **kwargs)
    return str(excinfo.value)


def parse_failure(directory: pathlib.Path, text: str) -> str:
    with pytest.raises(SqlLogicParseError) as excinfo:
        run(directory, text)
    return str(excinfo.value)


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------


def test_parse_builds_records_with_locations() -> None:
    records = parse(
        textwrap.dedent(
            """\
            # header comment
            statement error
            SELECT x
            ----
            Binder Error

            loop i 0 2

            query II rowsort
            SELECT ${i},
                   2
            ----
            1\t2

            endloop
            """
        ),
        "f.test",
    )
    statement, loop = records
    assert statement == Statement(statement.location, "SELECT x", True, "Binder Error")
    assert str(statement.location) == "f.test:2"
    assert isinstance(loop, Loop) and loop.names == ("i",) and loop.iterations == (("0",), ("1",))
    (query,) = loop.body
    assert query == Query(
        query.location, "SELECT ${i},\n       2", "II", SortMode.ROWSORT, ("1\t2",)
    )
    assert str(query.location) == "f.test:9"


# --------------------------------------------------------------------------
# statements
# --------------------------------------------------------------------------


def test_passing_file_with_statements_queries_and_comments(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        # comments and blank lines are ignored


        statement ok
        CREATE TABLE t(i INTEGER, s VARCHAR);
        INSERT INTO t VALUES (1, 'a'), (2, 'b')

        # a comment between records
        query IT
        SELECT i, s FROM t ORDER BY i
        ----
        1\ta
        2\tb

        query I
        SELECT i FROM t WHERE i > 5
        ----
        """,
    )


def test_statement_ok_failure_reports_location_sql_and_error(tmp_path: pathlib.Path) -> None:
    report = failure(
        tmp_path,
        """
        statement ok
        SELECT 1

        statement ok
        SELECT *
        FROM missing_table
        """,
    )
    assert report.startswith("case.test:4: statement failed\n")
    assert "SQL:\n    SELECT *\n    FROM missing_table" in report
    assert "Error:\n    Catalog Error: Table with name missing_table does not exist" in report


@pytest.mark.parametrize("kind", ["error", "maybe"])
def test_statement_error_needs_an_expected_message(tmp_path: pathlib.Path, kind: str) -> None:
    # DuckDB's runner refuses 'statement error' without a message (outside SQLite's own files)
    assert parse_failure(tmp_path, f"statement {kind}\nSELECT * FROM missing_table\n") == (
        f"case.test:1: 'statement {kind}' needs the expected error message after '----' "
        f"(DuckDB's runner requires it)"
    )


def test_statement_maybe_passes_with_or_without_the_error(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        statement maybe
        SELECT 42
        ----
        does not exist

        statement maybe
        SELECT * FROM missing_table
        ----
        does not exist
        """,
    )
    report = failure(tmp_path, "statement maybe\nSELECT * FROM missing_table\n----\nboom\n")
    assert report.startswith("case.test:1: statement failed with an unexpected error")


def test_statement_error_fails_when_statement_succeeds(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "statement error\nSELECT 42\n----\nboom\n")
    assert report.startswith("case.test:1: statement succeeded but an error was expected")
    assert "SQL:\n    SELECT 42" in report
    assert "Expected error:\n    boom" in report
    assert "Actual:\n    (no error)" in report


def test_statement_error_sees_errors_raised_late_in_execution(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        statement error
        SELECT CASE WHEN i = 2999999 THEN error('late boom') END FROM range(3000000) t(i)
        ----
        late boom
        """,
    )


@pytest.mark.parametrize(
    ("expected", "passes"),
    [
        ("does not exist", True),
        ("Catalog Error: Table with name missing_table", True),
        # as in DuckDB, a regex must match the whole message (followed by a newline)
        ("<REGEX>:.*Table with name \\w+ does not.*", True),
        ("<REGEX>:^Catalog.*exist.*", True),
        ("<!REGEX>:Binder Error.*", True),
        ("<!REGEX>:missing_table", True),
        ("Binder Error", False),
        ("<REGEX>:Table with name", False),
        ("<REGEX>:^Catalog.*exist", False),
        ("<!REGEX>:.*missing_table.*", False),
    ],
)
def test_statement_error_message_matching(
    tmp_path: pathlib.Path, expected: str, passes: bool
) -> None:
    text = f"statement error\nSELECT * FROM missing_table\n----\n{expected}\n"
    if passes:
        run(tmp_path, text)
        return
    report = failure(tmp_path, text)
    assert report.startswith("case.test:1: statement failed with an unexpected error")
    assert f"Expected error:\n    {expected}\n" in report
    assert (
        "Actual error:\n    Catalog Error: Table with name missing_table does not exist" in report
    )


def test_statement_error_message_can_span_lines(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        statement error
        SELECT * FROM missing_table
        ----
        <REGEX>:Catalog Error.*
        .*Did you mean.*
        """,
    )


# --------------------------------------------------------------------------
# queries: comparison and reports
# --------------------------------------------------------------------------


def test_query_mismatch_report_is_aligned_and_complete(tmp_path: pathlib.Path) -> None:
    report = failure(
        tmp_path,
        """
        statement ok
        CREATE TABLE t AS SELECT * FROM (VALUES (1, 'apple'), (22, 'kiwi'), (3, 'fig')) v(n, name)

        query IT
        SELECT n, name
        FROM t
        ----
        1\tapple
        22\tbanana
        3\tfig
        """,
    )
    lines = report.split("\n")
    assert (
        lines[0]
        == "case.test:4: wrong value at row 2, column 2 (name): expected 'banana', got 'kiwi' "
        "(query IT nosort)"
    )
    assert "SQL:\n    SELECT n, name\n    FROM t\n" in report
    expected_block = "Expected (3 rows):\n      1   apple\n    > 22  banana\n      3   fig\n"
    actual_block = "Actual (3 rows):\n      1   apple\n    > 22  kiwi\n      3   fig"
    assert expected_block in report
    assert report.endswith(actual_block)


def test_query_column_count_mismatch(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "query I\nSELECT 1, 2\n----\n1\t2\n")
    assert report.startswith("case.test:1: query declares 1 column(s) ('I') but the result has 2")
    assert "Actual (1 rows):\n      1  2" in report


def test_query_row_count_mismatch(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "query I\nSELECT * FROM range(3)\n----\n0\n1\n")
    assert report.startswith("case.test:1: expected 2 rows but got 3")
    assert "Expected (2 rows):\n      0\n      1\n" in report
    assert "Actual (3 rows):\n      0\n      1\n      2" in report


def test_query_expected_row_with_wrong_number_of_values(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "query II\nSELECT 1, 2\n----\n1\t2\t3\n")
    assert report.startswith(
        "case.test:1: expected row 1 has 3 value(s) but the query has 2 column(s)"
    )


def test_query_error_is_reported(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "query I\nSELECT 'x'::INTEGER\n----\n1\n")
    assert report.startswith("case.test:1: query failed")
    assert "SQL:\n    SELECT 'x'::INTEGER" in report
    assert "Expected:\n    1" in report
    assert "Error:\n    Conversion Error: Could not convert string 'x' to INT32" in report


def test_values_are_rendered_like_duckdbs_runner(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        query TTTIRRRTTTTT
        SELECT NULL, '', 'a b', 42, 0.5::DOUBLE, 1.0::DOUBLE, 1.5::DECIMAL(4,2),
               '\\xAA\\x00'::BLOB, [1, 2], {'k': 'v'}, 'x' || chr(0) || 'y', DATE '2024-01-02'
        ----
        NULL\t(empty)\ta b\t42\t0.5\t1.0\t1.50\t\\xAA\\x00\t[1, 2]\t{'k': v}\tx\\0y\t2024-01-02
        """,
    )


@pytest.mark.parametrize("spelling", ["true\tfalse", "1\t0", "TRUE\tFalse"])
def test_boolean_spellings(tmp_path: pathlib.Path, spelling: str) -> None:
    run(tmp_path, f"query II\nSELECT true, false\n----\n{spelling}\n")


def test_boolean_mismatch_is_shown_as_true_false(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "query I\nSELECT true\n----\nfalse\n")
    assert "expected 'false', got 'true'" in report


@pytest.mark.parametrize(
    ("sql", "expected", "passes"),
    [
        ("SELECT 1 / 3", "0.333", True),  # DOUBLE: DuckDB's 1% relative tolerance
        ("SELECT 100.0::DOUBLE", "100.9", True),
        ("SELECT 'nan'::DOUBLE", "nan", True),
        ("SELECT 0.5::DOUBLE", "0.6", False),
        ("SELECT 'inf'::DOUBLE", "1e308", False),
        ("SELECT 1.5::DECIMAL(4,2)", "1.5", True),  # expected text cast to the column type
        ("SELECT 1.25::DECIMAL(4,2)", "1.249", True),
        ("SELECT 1.25::DECIMAL(4,2)", "1.24", False),
        ("SELECT 10", "10.0", True),
        ("SELECT 10", "11", False),
        ("SELECT 10", "NULL", False),
        ("SELECT '0.333'", "0.3333", False),  # strings compare exactly
    ],
)
def test_numeric_comparison(tmp_path: pathlib.Path, sql: str, expected: str, passes: bool) -> None:
    text = f"query R\n{sql}\n----\n{expected}\n"
    if passes:
        run(tmp_path, text)
    else:
        assert "wrong value at row 1, column 1" in failure(tmp_path, text)


def test_row_values_are_separated_by_tabs_only(tmp_path: pathlib.Path) -> None:
    sql = "query TI\nSELECT * FROM (VALUES ('hello world', 1), ('x', 2))\n----\n"
    run(tmp_path, sql + "hello world\t1\nx\t2\n")
    report = failure(tmp_path, sql + "hello world  1\nx  2\n")  # DuckDB splits on tabs alone
    assert "expected row 1 has 1 value(s) but the query has 2 column(s)" in report


def test_expected_values_from_a_file(tmp_path: pathlib.Path) -> None:
    answers = tmp_path / "answers.csv"
    answers.write_text("k|label\n1|one\n2|NULL\n", encoding="utf-8")
    sql = "SELECT * FROM (VALUES (1, 'one'), (2, NULL)) t(k, label)"
    run(tmp_path, f"query IT\n{sql}\n----\n<FILE>:{answers}\n")
    answers.write_text("k|label\n1|one\n2|two\n", encoding="utf-8")
    report = failure(tmp_path, f"query IT\n{sql}\n----\n<FILE>:{answers}\n")
    assert "wrong value at row 2, column 2 (label): expected 'two', got 'NULL'" in report
    report = failure(tmp_path, f"query IT\n{sql}\n----\n<FILE>:{tmp_path}/missing.csv\n")
    assert report.startswith(f"case.test:1: could not read the expected result file {tmp_path}")


def test_empty_pieces_between_tabs_are_dropped(tmp_path: pathlib.Path) -> None:
    # DuckDB's StringUtil::Split drops empty pieces: doubled or trailing tabs are harmless
    run(tmp_path, "query TR\nSELECT 'Bob', 6.5\n----\nBob\t\t6.5\t\n")


def test_one_value_per_line_must_fill_rows(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "query II\nSELECT * FROM (VALUES (1, 2), (3, 4))\n----\n1\n2\n3\n")
    assert "3 expected values (one per line) do not fill rows of 2 column(s)" in report


def test_one_value_per_line_layout(tmp_path: pathlib.Path) -> None:
    run(tmp_path, "query II\nSELECT * FROM (VALUES (1, 2), (3, 4))\n----\n1\n2\n3\n4\n")


def test_regex_in_query_results(tmp_path: pathlib.Path) -> None:
    run(tmp_path, "query TT\nSELECT version(), 'abc'\n----\n<REGEX>:v\\d+\\..*\t<!REGEX>:b\n")
    report = failure(tmp_path, "query T\nSELECT 'abc'\n----\n<REGEX>:b\n")  # full match required
    assert "wrong value at row 1, column 1" in report


# --------------------------------------------------------------------------
# sorting and hashes
# --------------------------------------------------------------------------

UNORDERED = "SELECT * FROM (VALUES (3, 'c'), (1, 'z'), (2, 'a'))"


def test_rowsort_sorts_the_result_not_the_expected_rows(tmp_path: pathlib.Path) -> None:
    run(tmp_path, f"query IT rowsort\n{UNORDERED}\n----\n1\tz\n2\ta\n3\tc\n")
    # DuckDB compares the expected rows as written: they must be in sorted order
    report = failure(tmp_path, f"query IT rowsort\n{UNORDERED}\n----\n2\ta\n3\tc\n1\tz\n")
    assert "wrong value at row 1, column 1 (col0): expected '2', got '1'" in report


def test_valuesort_sorts_every_value(tmp_path: pathlib.Path) -> None:
    run(tmp_path, f"query IT valuesort\n{UNORDERED}\n----\n1\t2\n3\ta\nc\tz\n")
    assert "wrong value" in failure(
        tmp_path, f"query IT valuesort\n{UNORDERED}\n----\n3\tc\n1\tz\n2\ta\n"
    )


def test_nosort_keeps_order(tmp_path: pathlib.Path) -> None:
    run(tmp_path, f"query IT nosort\n{UNORDERED}\n----\n3\tc\n1\tz\n2\ta\n")
    report = failure(tmp_path, f"query IT\n{UNORDERED}\n----\n1\tz\n2\ta\n3\tc\n")
    assert (
        "wrong value at row 1, column 1 (col0): expected '1', got '3' (query IT nosort)" in report
    )


def test_rowsort_orders_booleans_like_duckdb(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        "query I rowsort\nSELECT * FROM (VALUES (NULL), (true), (false))\n"
        "----\nfalse\ntrue\nNULL\n",  # sorted as DuckDB renders them: 0, 1, NULL
    )


# The t1 table of DuckDB's test/sqlite/select1.test with the hashes DuckDB's
# own runner expects there, so the md5 rule is checked against the real thing.
SELECT1_SETUP = """
statement ok
CREATE TABLE t1(a INTEGER, b INTEGER, c INTEGER, d INTEGER, e INTEGER)

statement ok
INSERT INTO t1 VALUES (104,100,102,101,103), (107,105,106,108,109), (111,112,113,114,110),
(115,118,119,116,117), (121,124,123,122,120), (127,129,125,128,126), (131,130,134,133,132),
(138,139,137,136,135), (142,143,141,140,144), (149,145,147,148,146), (153,151,150,154,152),
(159,158,155,156,157), (163,160,161,164,162), (168,167,166,169,165), (174,170,172,171,173),
(179,175,176,178,177), (182,181,184,183,180), (188,186,187,185,189), (191,194,193,190,192),
(199,198,195,196,197), (201,200,202,203,204), (205,206,208,207,209), (213,211,214,212,210),
(216,218,215,217,219), (220,223,224,222,221), (229,228,225,226,227), (234,232,231,233,230),
(239,236,235,238,237), (243,240,244,241,242), (245,249,247,248,246)
"""


def test_hash_matches_duckdbs_own_expectations(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        SELECT1_SETUP
        + """
query II nosort
SELECT a, b FROM t1 ORDER BY 1, 2
----
60 values hashing to f88a6f6656b30fc5b3c4ede940008ff2

query I nosort
SELECT CASE WHEN c>(SELECT avg(c) FROM t1) THEN a*2 ELSE b*10 END FROM t1 ORDER BY 1
----
30 values hashing to 3c13dee48d9356ae19af2515e05e6b54

query II rowsort
SELECT a, b FROM t1 ORDER BY b DESC
----
60 values hashing to f88a6f6656b30fc5b3c4ede940008ff2
""",
    )


def test_hash_mismatch_reports_actual_hash_and_values(tmp_path: pathlib.Path) -> None:
    report = failure(
        tmp_path, "query I\nSELECT 1\n----\n1 values hashing to 00000000000000000000000000000000\n"
    )
    assert report.startswith("case.test:1: wrong result hash (query I nosort)")
    assert "Expected hash:\n    1 values hashing to 00000000000000000000000000000000" in report
    assert (
        "Actual hash:\n    1 values hashing to b026324c6904b2a9cb4b88d6d61c81d1" in report
    )  # md5("1\n")
    assert "Actual (1 rows):\n      1" in report


def test_hash_counts_every_column_whatever_the_header_declares(tmp_path: pathlib.Path) -> None:
    # DuckDB's runner checks no column count against a hash: 2 rows x 2 columns = 4 values
    sql = (
        "SELECT g, string_agg(x, ',' ORDER BY x) FROM (VALUES (1, 'a'), (1, 'b'), (2, 'c')) t(g, x)"
    )
    values = "1\na,b\n2\nc\n"
    digest = hashlib.md5(values.encode()).hexdigest()
    run(tmp_path, f"query I rowsort\n{sql} GROUP BY g\n----\n4 values hashing to {digest}\n")


def test_more_columns_than_declared_fails_naming_the_header_to_use(
    tmp_path: pathlib.Path,
) -> None:
    # DuckDB compares with the result's width and fails even when the values match
    report = failure(tmp_path, "query I\nSELECT 1, 2\n----\n1\t2\n")
    assert report.startswith(
        "case.test:1: query declares 1 column(s) ('I') but the result has 2; the expected "
        "values match the result otherwise: declare 'query II'"
    )
    report = failure(tmp_path, "query I\nSELECT 1, 2\n----\n1\t3\n")
    assert report.startswith("case.test:1: query declares 1 column(s) ('I') but the result has 2 ")


def test_query_labels_compare_results_by_hash(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        query I nosort squares
        SELECT i * i FROM range(4) t(i)
        ----

        query I nosort squares
        SELECT pow(i, 2)::BIGINT FROM range(4) t(i)
        ----
        """,
    )
    report = failure(
        tmp_path,
        "query I nosort sq\nSELECT 1\n----\n\nquery I nosort sq\nSELECT 2\n----\n",
    )
    assert report.startswith("case.test:5: result differs from the earlier queries labelled 'sq'")


def test_hash_threshold(tmp_path: pathlib.Path) -> None:
    digest = hashlib.md5(b"0\n1\n2\n").hexdigest()
    run(
        tmp_path,
        f"hash-threshold 2\n\nquery I\nSELECT * FROM range(3)\n----\n3 values hashing to {digest}\n"
        "\nquery I\nSELECT * FROM range(3)\n----\n0\n1\n2\n",
    )
    # DuckDB would check nothing here; this runner says so instead of passing
    report = failure(tmp_path, "hash-threshold 2\n\nquery I\nSELECT * FROM range(3)\n----\n")
    assert "unsupported: the result has 3 values, over hash-threshold 2" in report


def test_set_seed_makes_random_repeatable(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        set seed 0.25

        statement ok
        CREATE TABLE a AS SELECT random() AS r

        set seed 0.25

        query I
        SELECT r = random() FROM a
        ----
        true
        """,
    )


def test_require_with_arguments_is_looked_up_by_its_whole_text(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SqlLogicTestSkip, match="require vector_size 512"):
        run(tmp_path, "require vector_size 512\n\nstatement ok\nSELECT 1\n")
    run(
        tmp_path,
        "require vector_size 512\n\nstatement ok\nSELECT 1\n",
        requirements={"vector_size 512": lambda conn: None},
    )


# --------------------------------------------------------------------------
# require / require-env / substitutions
# --------------------------------------------------------------------------


def recording_requirement(
    log: list[str], name: str
) -> Callable[[duckdb.DuckDBPyConnection], Callable[[], None]]:
    def setup(conn: duckdb.DuckDBPyConnection) -> Callable[[], None]:
        conn.execute(f"CREATE MACRO {name}() AS '{name}'")
        log.append(f"setup {name}")

        def cleanup() -> None:
            conn.execute("SELECT 1")  # the connection is still open during cleanup
            log.append(f"cleanup {name}")

        return cleanup

    return setup


REQUIRE_TEXT = """
require alpha

require beta

query TT
SELECT alpha(), beta()
----
{expected}
"""


def test_require_runs_setup_then_cleanups_newest_first(tmp_path: pathlib.Path) -> None:
    log: list[str] = []
    requirements = {name: recording_requirement(log, name) for name in ("alpha", "beta")}
    run(tmp_path, REQUIRE_TEXT.format(expected="alpha\tbeta"), requirements=requirements)
    assert log == ["setup alpha", "setup beta", "cleanup beta", "cleanup alpha"]


def test_cleanups_run_and_connection_closes_on_failure(tmp_path: pathlib.Path) -> None:
    log: list[str] = []
    connections: list[duckdb.DuckDBPyConnection] = []
    requirements = {name: recording_requirement(log, name) for name in ("alpha", "beta")}
    requirements["beta"] = lambda conn, setup=requirements["beta"]: (
        connections.append(conn) or setup(conn)
    )
    failure(tmp_path, REQUIRE_TEXT.format(expected="alpha\tgamma"), requirements=requirements)
    assert log[-2:] == ["cleanup beta", "cleanup alpha"]
    with pytest.raises(duckdb.ConnectionException):
        connections[0].execute("SELECT 1")


def test_requirement_without_cleanup(tmp_path: pathlib.Path) -> None:
    requirements = {"answer": lambda conn: conn.execute("CREATE MACRO answer() AS 42") and None}
    run(
        tmp_path,
        "require answer\n\nquery I\nSELECT answer()\n----\n42\n",
        requirements=requirements,
    )


def test_unknown_requirement_skips_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SqlLogicTestSkip, match="^require vgi_vision$"):
        run(tmp_path, "require vgi_vision\n\nstatement ok\nSELECT broken\n")


def test_unknown_requirement_fails_in_strict_mode(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "statement ok\nSELECT 1\n\nrequire vgi_vision\n", strict=True)
    assert (
        report == "case.test:4: require vgi_vision: no such requirement is registered (strict mode)"
    )


def test_require_env_skips_when_unset(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLT_TEST_VAR", raising=False)
    with pytest.raises(SqlLogicTestSkip, match="^require-env SLT_TEST_VAR$"):
        run(tmp_path, "require-env SLT_TEST_VAR\n\nstatement ok\nSELECT broken\n")


def test_require_env_skips_on_other_value(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLT_TEST_VAR", "other")
    with pytest.raises(SqlLogicTestSkip, match="^require-env SLT_TEST_VAR wanted$"):
        run(tmp_path, "require-env SLT_TEST_VAR wanted\n\nstatement ok\nSELECT broken\n")


def test_require_env_substitutes_variable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLT_TEST_VAR", "wanted")
    monkeypatch.setenv("SLT_OTHER", "hello")
    run(
        tmp_path,
        """
        require-env SLT_TEST_VAR wanted

        require-env SLT_OTHER

        query TT
        SELECT '${SLT_TEST_VAR}', '${SLT_OTHER}' || '!'
        ----
        wanted\t${SLT_OTHER}!
        """,
    )


def test_test_dir_and_working_directory(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        f"""
        statement ok
        COPY (SELECT 7 AS x) TO '__TEST_DIR__/seven.csv'

        query I
        SELECT x FROM read_csv('__TEST_DIR__/seven.csv')
        ----
        7

        query T
        SELECT '__WORKING_DIRECTORY__'
        ----
        {os.getcwd()}
        """,
    )


# --------------------------------------------------------------------------
# loops, mode skip, halt, skipif/onlyif
# --------------------------------------------------------------------------


def test_loop_is_end_exclusive_and_nests(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        statement ok
        CREATE TABLE t(i INTEGER, j INTEGER)

        loop i 0 3

        loop j 10 12

        statement ok
        INSERT INTO t VALUES (${i}, ${j})

        endloop

        query I
        SELECT count(*) FROM t WHERE i = ${i}
        ----
        2

        endloop

        query II
        SELECT min(i), max(i) FROM t
        ----
        0\t2
        """,
    )


def test_foreach_single_and_multiple_names(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        foreach type INTEGER BIGINT VARCHAR

        query I
        SELECT typeof(1::${type}) = upper('{type}')
        ----
        true

        endloop

        foreach word,length apple,5 fig,3

        query I
        SELECT length('${word}') = {length}
        ----
        true

        endloop
        """,
    )


def test_foreach_with_one_name_keeps_commas_in_values(tmp_path: pathlib.Path) -> None:
    # DuckDB splits values on commas only when the loop names several variables
    run(
        tmp_path,
        """
        statement ok
        CREATE TABLE seen(t VARCHAR)

        foreach type decimal(4,1) decimal(18,3) integer

        statement ok
        INSERT INTO seen SELECT typeof(1::${type})

        endloop

        query I
        SELECT string_agg(t, ' ' ORDER BY t) FROM seen
        ----
        DECIMAL(18,3) DECIMAL(4,1) INTEGER
        """,
    )


def test_foreach_groups_expand_like_duckdb(tmp_path: pathlib.Path) -> None:
    records = parse("foreach t <signed> !bigint <unsigned> float\n\nendloop\n")
    (loop,) = records
    assert isinstance(loop, Loop)
    assert [v for (v,) in loop.iterations] == [
        "tinyint", "smallint", "integer", "hugeint",
        "utinyint", "usmallint", "uinteger", "ubigint", "uhugeint", "float",
    ]  # fmt: skip
    (integral,) = parse("foreach t <integral>\n\nendloop\n")
    assert isinstance(integral, Loop) and len(integral.iterations) == 10


def test_loop_variables_are_not_replaced_in_expected_results(tmp_path: pathlib.Path) -> None:
    # as in DuckDB: only the SQL gets loop variables; the expected values are literal
    text = "loop i 0 1\n\nquery T\nSELECT '${i}' || '{i}'\n----\n0{i}\n\nendloop\n"
    report = failure(tmp_path, text)
    assert "expected '0{i}', got '00'" in report


def test_keywords_and_environment_variables(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLT_COLOUR", "blue")
    run(
        tmp_path,
        """
        require-env SLT_COLOUR

        test-env SLT_SIZE large

        set variable SLT_SHAPE round

        query T
        SELECT '{SLT_COLOUR} ${SLT_SIZE} {SLT_SHAPE} {TEST_NAME}'
        ----
        blue large round case.test

        statement ok
        COPY (SELECT 42 AS answer) TO '{TEST_DIR}/{BASE_TEST_NAME}.csv'

        query I
        SELECT answer FROM read_csv('__TEST_DIR__/{BASE_TEST_NAME}.csv')
        ----
        42
        """,
    )
    assert "{BUILD_DIRECTORY}" in failure(tmp_path, "statement ok\nSELECT '{BUILD_DIRECTORY}'\n")


def test_failure_inside_loop_names_the_iteration(tmp_path: pathlib.Path) -> None:
    report = failure(tmp_path, "loop i 0 5\n\nquery I\nSELECT ${i} < 3\n----\ntrue\n\nendloop\n")
    assert report.startswith("case.test:3 [i=3]: wrong value at row 1, column 1")
    assert "SQL:\n    SELECT 3 < 3" in report


def test_mode_skip_skips_records_until_unskip(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        mode skip

        statement ok
        THIS IS NOT SQL

        load some.db

        query I
        SELECT 1
        ----
        2

        mode unskip

        query I
        SELECT 1
        ----
        1
        """,
    )


def test_halt_stops_the_file_successfully(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        "statement ok\nSELECT 1\n\nhalt\n\nstatement ok\nTHIS IS NOT SQL\n\nload never.db\n",
    )


def test_skipif_and_onlyif(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        skipif duckdb
        statement ok
        THIS IS NOT SQL

        onlyif postgresql
        statement ok
        THIS IS NOT SQL

        onlyif duckdb
        query I
        SELECT 1
        ----
        1
        """,
    )


def test_load_restart_and_reconnect(tmp_path: pathlib.Path) -> None:
    events: list[str] = []

    def answer(conn: duckdb.DuckDBPyConnection) -> Callable[[], None]:
        conn.execute("CREATE OR REPLACE MACRO answer() AS 42")
        events.append("setup")
        return lambda: events.append("cleanup")

    run(
        tmp_path,
        """
        require answer

        load {TEST_DIR}/kept.db

        statement ok
        CREATE TABLE t AS SELECT answer() AS a

        statement ok
        SET default_null_order = 'nulls_first'

        restart

        query I
        SELECT a FROM t UNION ALL SELECT NULL ORDER BY 1
        ----
        NULL
        42

        reconnect

        query I
        SELECT answer() + count(*) FROM t
        ----
        43

        load

        statement error
        SELECT * FROM t
        ----
        does not exist
        """,
        requirements={"answer": answer},
    )
    # set up on the first database, then again after each load and the restart
    assert events == ["setup", "cleanup"] * 4


def test_restart_carries_settings_that_duckdb_settings_does_not_list(
    tmp_path: pathlib.Path,
) -> None:
    conn = duckdb.connect()
    listed = {name for (name,) in conn.execute("SELECT name FROM duckdb_settings()").fetchall()}
    try:
        conn.execute("SELECT current_setting('lambda_syntax')")
    except duckdb.Error:
        pytest.skip("this duckdb has no lambda_syntax setting")
    assert "lambda_syntax" not in listed  # else this test checks nothing new
    run(
        tmp_path,
        """
        load {TEST_DIR}/settings.db readwrite latest

        statement ok
        SET lambda_syntax = 'DISABLE_SINGLE_ARROW'

        restart

        query I
        SELECT current_setting('lambda_syntax')::VARCHAR || ' ' ||
               current_setting('storage_compatibility_version')::VARCHAR
        ----
        DISABLE_SINGLE_ARROW latest
        """,
    )


def test_load_starts_a_writable_database_empty(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLT_DIR", str(tmp_path))
    text = """
        require-env SLT_DIR

        load {SLT_DIR}/kept.db

        statement ok
        CREATE TABLE t(i INTEGER)
        """
    run(tmp_path, text)
    assert (tmp_path / "kept.db").exists()
    run(tmp_path, text)  # the file of the first run was deleted first, as DuckDB does


def test_unzip(tmp_path: pathlib.Path) -> None:
    packed = tmp_path / "numbers.csv.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as out:
        out.write("n\n1\n2\n")
    run(
        tmp_path,
        f"""
        unzip {packed}

        unzip {packed} {{TEST_DIR}}/copy.csv

        query II
        SELECT (SELECT sum(n) FROM '{{TEST_DIR}}/numbers.csv'),
               (SELECT sum(n) FROM '{{TEST_DIR}}/copy.csv')
        ----
        3\t3
        """,
    )
    report = failure(tmp_path, f"unzip {tmp_path}/missing.gz\n")
    assert report.startswith(f"case.test:1: unzip {tmp_path}/missing.gz failed: ")


def test_named_connections_share_the_database(tmp_path: pathlib.Path) -> None:
    run(
        tmp_path,
        """
        statement ok con1
        CREATE TABLE t AS SELECT 1 AS i

        statement ok con1
        SET VARIABLE v = 7

        query I con2
        SELECT i + coalesce(getvariable('v'), 0) FROM t
        ----
        1

        query I con1 sum_label
        SELECT i + getvariable('v') FROM t
        ----
        8
        """,
    )


def test_each_file_gets_a_fresh_connection(tmp_path: pathlib.Path) -> None:
    run_file(write(tmp_path, "statement ok\nCREATE TABLE t(i INTEGER)\n", "first.test"))
    run_file(write(tmp_path, "statement ok\nCREATE TABLE t(i INTEGER)\n", "second.test"))


# --------------------------------------------------------------------------
# unsupported directives and malformed files
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "directive"),
    [
        ("load x.db readwrite v1.0.0 more", "load x.db readwrite v1.0.0 more"),
        ("continue", "continue"),
        ("reset label x", "reset"),
        ("concurrentloop i 0 2", "concurrentloop"),
        ("concurrentforeach i a b", "concurrentforeach"),
        ("include other.test", "include"),
        ("sleep 1 second", "sleep"),
        ("set ignore_error_messages x", "set ignore_error_messages"),
        ("set variable v <variable:x>", "set variable v"),
        ("mode output_result", "mode output_result"),
        ("foreach c <all_types_columns>", "foreach group <all_types_columns>"),
        ("foreach c <variable:v>", "foreach group <variable:v>"),
        ("statement ok con1 more\nSELECT 1", "statement ok con1 more"),
        ("statement debug\nSELECT 1", "statement debug"),
        ("query I nosort label more\nSELECT 1", "query I nosort label more"),
        ("skipif i=2\nstatement ok\nSELECT 1", "skipif i=2 (a condition on a variable)"),
    ],
)
def test_unsupported_directives_fail_loudly(
    tmp_path: pathlib.Path, line: str, directive: str
) -> None:
    report = parse_failure(tmp_path, f"statement ok\nSELECT 1\n\n{line}\n")
    assert report == f"unsupported directive '{directive}' at case.test:4"


def test_unknown_directive(tmp_path: pathlib.Path) -> None:
    assert (
        parse_failure(tmp_path, "frobnicate\n") == "unknown directive 'frobnicate' at case.test:1"
    )


def test_only_an_empty_line_ends_a_record() -> None:
    # as in DuckDB, a line of spaces belongs to the SQL and cannot start a record
    (statement,) = parse("statement ok\nSELECT\n  \n1\n")
    assert isinstance(statement, Statement) and statement.sql == "SELECT\n  \n1"
    with pytest.raises(SqlLogicParseError, match="f.test:4: a line of only spaces"):
        parse("statement ok\nSELECT 1\n\n  \n", "f.test")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loop i 0 2\n\nstatement ok\nSELECT 1\n", "case.test:1: loop without endloop"),
        ("endloop\n", "case.test:1: endloop without loop"),
        (
            "statement ok\nSELECT 1\n----\nboom\n",
            "case.test:1: only 'statement error' can have an expected message",
        ),
        (
            "require x\nstatement ok\nSELECT 1\n",
            "case.test:1: a single-line directive must be followed by an empty line",
        ),
        ("loop i a b\n\nendloop\n", "case.test:1: loop bounds must be integers"),
        (
            "query IX\nSELECT 1, 2\n",
            "case.test:1: unknown column type 'X' in 'query IX' (one of T, I or R per column)",
        ),
        ("statement ok\n\n", "case.test:1: statement without SQL"),
        ("mode unskip\n", "case.test:1: mode unskip without mode skip"),
        (
            "foreach a,b 1,2 3\n\nendloop\n",
            "case.test:1: foreach value '3' does not match the names 'a,b'",
        ),
        (
            "loop i 0 2\n\nrequire x\n\nendloop\n",
            "case.test:3: require cannot be used inside a loop",
        ),
        ("loop i 0 2\n\nhalt\n\nendloop\n", "case.test:3: halt inside a loop is not supported"),
        (
            "skipif duckdb\n\nstatement ok\nSELECT 1\n",
            "case.test:2: skipif must be followed by a record",
        ),
    ],
)
def test_malformed_files(tmp_path: pathlib.Path, text: str, message: str) -> None:
    assert parse_failure(tmp_path, text) == message


# --------------------------------------------------------------------------
# pytest integration (collect_file), end to end with pytester
# --------------------------------------------------------------------------

CONFTEST = """
import pathlib

from vgi_vision.testing.sqllogictest import collect_file

LOG = pathlib.Path(__file__).parent / "cleanup.log"


def _log_cleanup():
    with LOG.open("a") as log:
        log.write("cleaned\\n")


def _answer(conn):
    conn.execute("CREATE MACRO answer() AS 42")
    return _log_cleanup


def pytest_addoption(parser):
    parser.addoption("--strict-require", action="store_true")


def pytest_collect_file(parent, file_path):
    strict = parent.config.getoption("--strict-require")
    return collect_file(parent, file_path, {"answer": _answer}, strict=strict)
"""


@pytest.fixture
def sql_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    sql = pytester.mkpydir("sql")
    write(sql, "require answer\n\nquery I\nSELECT answer()\n----\n42\n", "good.test")
    write(sql, "require answer\n\nquery I\nSELECT answer() + 1\n----\n42\n", "bad.test")
    write(sql, "require vgi_vision\n\nstatement ok\nSELECT 1\n", "needs_plugin.test")
    write(sql, "statement ok\nSELECT 1\n\nsleep 1 second\n", "unsupported.test")
    write(sql, "not a sqllogictest file\n", "notes.txt")
    return pytester


def test_pytest_collects_only_test_files(sql_project: pytest.Pytester) -> None:
    result = sql_project.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "sql/bad.test::bad.test",
            "sql/good.test::good.test",
            "sql/needs_plugin.test::needs_plugin.test",
            "sql/unsupported.test::unsupported.test",
        ]
    )
    result.stdout.no_fnmatch_line("*notes.txt*")


def test_pytest_outcomes_and_failure_report(sql_project: pytest.Pytester) -> None:
    result = sql_project.runpytest("-rs")
    result.assert_outcomes(passed=1, failed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "sql/bad.test:3: wrong value at row 1, column 1 (*): expected '42', got '43' "
            "(query I nosort)",
            "SQL:",
            "    SELECT answer() + 1",
            "Expected (1 rows):",
            "    > 42",
            "Actual (1 rows):",
            "    > 43",
            "unsupported directive 'sleep' at sql/unsupported.test:4",
            "SKIPPED [[]1[]] sql/needs_plugin.test:1: require vgi_vision",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*testing/sqllogictest/*.py*")
    # cleanups ran for both files that used the requirement, pass or fail
    assert (sql_project.path / "cleanup.log").read_text() == "cleaned\ncleaned\n"


def test_pytest_strict_mode_fails_unknown_requirements(sql_project: pytest.Pytester) -> None:
    result = sql_project.runpytest("--strict-require", "sql/needs_plugin.test")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "sql/needs_plugin.test:1: require vgi_vision: no such requirement is registered "
            "(strict mode)"
        ]
    )

"""The sqllogictest runner's parser and statements, and the files it refuses: unsupported
directives and malformed records."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
from sqllogictest_files import assert_report, failure, parse_failure, run

from vgi_vision.testing.sqllogictest import (
    Loop,
    Query,
    SortMode,
    SqlLogicParseError,
    Statement,
    parse,
)

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
    assert_report(report, "case.test:4: statement failed\n", {
        "SQL": "SELECT *\nFROM missing_table",
        "Error": "Catalog Error: Table with name missing_table does not exist"})


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
    assert_report(report, "case.test:1: statement succeeded but an error was expected", {
        "SQL": "SELECT 42", "Expected error": "boom", "Actual": "(no error)"})


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

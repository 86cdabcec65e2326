"""The sqllogictest runner's directives: require and require-env, substitutions, loops,
mode skip, halt, skipif/onlyif, load/restart/reconnect and named connections."""

from __future__ import annotations

import gzip
import os
import pathlib
from collections.abc import Callable

import duckdb
import pytest
from sqllogictest_files import failure, run, write

from vgi_vision.testing.sqllogictest import Loop, SqlLogicTestSkip, parse, run_file

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


@pytest.mark.parametrize(("value", "directive"), [
    (None, "require-env SLT_TEST_VAR"),  # unset
    ("other", "require-env SLT_TEST_VAR wanted"),  # set to another value
])
def test_require_env_skips(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                           value: str | None, directive: str) -> None:
    if value is None:
        monkeypatch.delenv("SLT_TEST_VAR", raising=False)
    else:
        monkeypatch.setenv("SLT_TEST_VAR", value)
    with pytest.raises(SqlLogicTestSkip, match=f"^{directive}$"):
        run(tmp_path, f"{directive}\n\nstatement ok\nSELECT broken\n")


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

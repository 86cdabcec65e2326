"""The sqllogictest runner as a pytest plugin (``collect_file``), end to end with pytester."""

from __future__ import annotations

import pytest
from sqllogictest_files import write

pytest_plugins = ["pytester"]


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

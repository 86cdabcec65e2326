"""Execute parsed records on a fresh in-memory DuckDB connection (``run_file``)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import tempfile
from collections.abc import Mapping, Sequence

import duckdb

from vgi_vision.testing.sqllogictest.compare import Section, compare, fetch, indent, regex_matches
from vgi_vision.testing.sqllogictest.parser import parse
from vgi_vision.testing.sqllogictest.records import (
    Location,
    Loop,
    Query,
    Record,
    Require,
    RequireEnv,
    Requirement,
    SqlLogicTestFailure,
    SqlLogicTestSkip,
    Statement,
)


def _error_matches(expected: str, message: str) -> bool:
    """Substring match as DuckDB does, or ``<REGEX>:``/``<!REGEX>:`` searches."""
    regex = regex_matches(expected, message, full=False)
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
        body = "".join(f"\n{title}:\n{indent(text)}" for title, text in sections)
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
            result = fetch(self._conn, sql)
        except duckdb.Error as error:
            raise self._failure(
                record.location, loop_vars, "query failed",
                [("SQL", sql), ("Expected", "\n".join(expected) or "(no rows)"),
                 ("Error", str(error))],
            ) from None  # fmt: skip
        try:
            mismatch = compare(record, expected, result)
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

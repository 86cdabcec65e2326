"""Execute parsed records on a fresh in-memory DuckDB connection (``run_file``).

Follows DuckDB's ``sqllogic_test_runner.cpp`` and ``sqllogic_command.cpp``: the SQL of
a record gets its keywords replaced (``{VAR}``/``${VAR}`` from ``require-env`` and
``test-env``, ``{TEST_DIR}``, ``{WORKING_DIRECTORY}``, ``{UUID}``, ``{TEST_NAME}``,
``{BASE_TEST_NAME}`` and the older ``__TEST_DIR__`` spellings), then the loop variables
(``{i}`` or ``${i}``). Expected results and error messages get the keywords only, not
the loop variables, as in DuckDB.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence

import duckdb

from vgi_vision.testing.sqllogictest.compare import (
    Section,
    compare,
    fetch,
    indent,
    regex_matches,
    result_hash,
)
from vgi_vision.testing.sqllogictest.parser import parse
from vgi_vision.testing.sqllogictest.records import (
    Location,
    Loop,
    Query,
    Record,
    Require,
    RequireEnv,
    Requirement,
    SetSeed,
    SqlLogicTestFailure,
    SqlLogicTestSkip,
    Statement,
)


def _error_matches(expected: str, message: str) -> bool:
    """A substring, as DuckDB checks first; else a ``<REGEX>:``/``<!REGEX>:`` pattern that
    must match the whole message plus a newline (DuckDB matches ``result.ToString()``)."""
    if expected in message:
        return True
    regex = regex_matches(expected, message + "\n", full=True)
    return bool(regex)


def _is_internal(error: duckdb.Error) -> bool:
    """Internal errors are engine bugs; like DuckDB, never accept them as expected."""
    return isinstance(error, duckdb.InternalException) or "INTERNAL Error" in str(error)


class _FileRunner:
    """Executes parsed records against one connection.

    Holds the per-file state DuckDB's runner keeps: ``{VAR}`` values from
    ``require-env``, the ``{TEST_DIR}`` directory, the hashes of labelled queries, and
    the exit stack that runs requirement cleanups before the connection is closed.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        requirements: Mapping[str, Requirement],
        strict: bool,
        test_dir: str,
        test_name: str,
        cleanups: contextlib.ExitStack,
    ) -> None:
        self._conn = conn
        self._requirements = requirements
        self._strict = strict
        self._test_dir = test_dir
        self._test_name = test_name
        self._cleanups = cleanups
        self._env: dict[str, str] = {}
        self._labels: dict[str, str] = {}

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
            elif isinstance(record, SetSeed):
                self._set_seed(record)
            else:
                self._require_env(record)

    # -- substitution ---------------------------------------------------------

    def _keywords(self, text: str, location: Location) -> str:
        """DuckDB's ``ReplaceKeywords``: variables, then paths."""
        for name, value in self._env.items():
            text = text.replace("${" + name + "}", value).replace("{" + name + "}", value)
        for build in ("{BUILD_DIRECTORY}", "__BUILD_DIRECTORY__"):
            if build in text:
                raise SqlLogicTestFailure(
                    f"{location}: unsupported: {build} (DuckDB's build folder) has no "
                    f"counterpart here"
                )
        for key, value in (
            ("{TEST_DIR}", self._test_dir),
            ("{WORKING_DIRECTORY}", os.getcwd()),
            ("{TEST_NAME}", self._test_name),
            ("{BASE_TEST_NAME}", self._test_name.replace("/", "_")),
            ("__TEST_DIR__", self._test_dir),
            ("__WORKING_DIRECTORY__", os.getcwd()),
        ):
            text = text.replace(key, value)
        while "{UUID}" in text:
            text = text.replace("{UUID}", str(uuid.uuid4()), 1)
        return text

    def _sql(self, text: str, location: Location, loop_vars: Mapping[str, str]) -> str:
        text = self._keywords(text, location)
        for name, value in loop_vars.items():
            value = self._keywords(value, location)
            text = text.replace("${" + name + "}", value).replace("{" + name + "}", value)
        return text

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
        sql = self._sql(record.sql, record.location, loop_vars)
        error = self._execute(sql)
        expected = record.expected_error
        if error is None:
            if record.expect_error:
                raise self._failure(
                    record.location, loop_vars, "statement succeeded but an error was expected",
                    [("SQL", sql), ("Expected error", expected), ("Actual", "(no error)")],
                )  # fmt: skip
            return
        if not (record.expect_error or record.may_fail):
            raise self._failure(
                record.location,
                loop_vars,
                "statement failed",
                [("SQL", sql), ("Error", str(error))],
            )
        if _is_internal(error) or not self._error_matches(record, loop_vars, str(error)):
            raise self._failure(
                record.location, loop_vars, "statement failed with an unexpected error",
                [("SQL", sql), ("Expected error", expected), ("Actual error", str(error))],
            )  # fmt: skip

    def _execute(self, sql: str) -> duckdb.Error | None:
        """Run to completion (``complete()`` also surfaces late runtime errors)."""
        try:
            self._conn.execute(sql)
            self._conn.complete()
        except duckdb.Error as error:
            return error
        return None

    def _error_matches(self, record: Statement, loop_vars: Mapping[str, str], message: str) -> bool:
        expected = record.expected_error
        if expected and expected not in message:
            substituted = self._keywords(expected, record.location)
            if substituted in message:
                return True
        try:
            return _error_matches(expected, message)
        except re.error as exc:
            raise self._failure(
                record.location, loop_vars, f"invalid regular expression: {exc}", []
            ) from None

    def _query(self, record: Query, loop_vars: Mapping[str, str]) -> None:
        sql = self._sql(record.sql, record.location, loop_vars)
        expected = [self._keywords(line, record.location) for line in record.expected]
        try:
            result = fetch(self._conn, sql)
        except duckdb.Error as error:
            raise self._failure(
                record.location, loop_vars, "query failed",
                [("SQL", sql), ("Expected", "\n".join(expected) or "(no rows)"),
                 ("Error", str(error))],
            ) from None  # fmt: skip
        header = " ".join((record.types, record.sort_mode.value, record.label or "")).strip()
        values = len(result.rows) * len(result.columns)
        if record.label is None and not expected and values and 0 < record.hash_threshold < values:
            raise self._failure(
                record.location, loop_vars,
                f"unsupported: the result has {values} values, over hash-threshold "
                f"{record.hash_threshold}, and no expected hash; DuckDB's runner would check "
                f"nothing, this runner needs the expected values or their hash",
                [("SQL", sql), ("Actual hash", result_hash(record, result))],
            )  # fmt: skip
        if record.label is not None:
            self._check_label(record, loop_vars, sql, result_hash(record, result))
            if not expected:  # DuckDB: a labelled query is checked by its hash alone
                return
        try:
            mismatch = compare(record, expected, result)
        except re.error as exc:
            raise self._failure(
                record.location, loop_vars, f"invalid regular expression: {exc}", []
            ) from None
        if mismatch is not None:
            raise self._failure(
                record.location, loop_vars, f"{mismatch.summary} (query {header})",
                [("SQL", sql), *mismatch.sections],
            )  # fmt: skip

    def _check_label(
        self, record: Query, loop_vars: Mapping[str, str], sql: str, actual: str
    ) -> None:
        """The first query of a label records its result hash; the next ones must match."""
        assert record.label is not None
        first = self._labels.setdefault(record.label, actual)
        if first != actual:
            raise self._failure(
                record.location, loop_vars,
                f"result differs from the earlier queries labelled '{record.label}'",
                [("SQL", sql), ("Hash of the label", first), ("Actual hash", actual)],
            )  # fmt: skip

    def _loop(self, record: Loop, loop_vars: Mapping[str, str]) -> None:
        for values in record.iterations:
            self.run(record.body, {**loop_vars, **dict(zip(record.names, values, strict=True))})

    def _require(self, record: Require) -> None:
        setup = self._requirements.get(record.key)
        if setup is None:
            if self._strict:
                raise SqlLogicTestFailure(
                    f"{record.location}: require {record.key}: no such requirement is "
                    f"registered (strict mode)"
                )
            raise SqlLogicTestSkip(f"require {record.key}")
        cleanup = setup(self._conn)
        if cleanup is not None:
            self._cleanups.callback(cleanup)

    def _require_env(self, record: RequireEnv) -> None:
        if record.default is not None:  # test-env: no test configuration, so the default
            self._env[record.variable] = record.default
            return
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

    def _set_seed(self, record: SetSeed) -> None:
        self._conn.execute("SELECT setseed(?)", [record.value]).fetchall()


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
    connection is closed and ``{TEST_DIR}`` removed, whatever the outcome.
    """
    path = pathlib.Path(path)
    name = display_path or str(path)
    records = parse(path.read_text(encoding="utf-8"), name)
    with contextlib.ExitStack() as stack:
        test_dir = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="sqllogictest-", ignore_cleanup_errors=True)
        )
        conn = duckdb.connect()
        stack.callback(conn.close)
        _FileRunner(conn, requirements or {}, strict, test_dir, name, stack).run(records, {})

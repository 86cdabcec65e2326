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
import gzip
import os
import pathlib
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence

import duckdb

from vgi_vision.testing.sqllogictest import records
from vgi_vision.testing.sqllogictest.compare import (
    Column,
    Section,
    compare,
    fetch,
    indent,
    regex_matches,
    result_hash,
)
from vgi_vision.testing.sqllogictest.parser import parse

# ``SET [GLOBAL|SESSION|LOCAL] name =|TO``: settings a restart must carry over even when
# ``duckdb_settings()`` does not list them (``lambda_syntax``, for one).
_SET = re.compile(r"\bSET\s+(?:GLOBAL\s+|SESSION\s+|LOCAL\s+)?(\w+)\s*(?:=|\bTO\b)", re.I)


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
    """Executes parsed records against one database.

    Holds the per-file state DuckDB's runner keeps: ``{VAR}`` values from
    ``require-env``, the ``{TEST_DIR}`` directory, the hashes of labelled queries, the
    database (in memory until ``load``), its main and named connections, and the
    requirements met so far. Closing the database runs the requirement cleanups (newest
    first), then closes the connections.
    """

    def __init__(
        self,
        requirements: Mapping[str, records.Requirement],
        strict: bool,
        test_dir: str,
        test_name: str,
    ) -> None:
        self._requirements = requirements
        self._strict = strict
        self._test_dir = test_dir
        self._test_name = test_name
        self._env: dict[str, str] = {}
        self._labels: dict[str, str] = {}
        self._met: list[records.Require] = []
        self._db_path = ":memory:"
        self._read_only = False
        self._config: dict[str, str | bool | int | float | list[str]] = {}
        self._set_names: set[str] = set()
        self._db_stack = contextlib.ExitStack()
        self._root: duckdb.DuckDBPyConnection | None = None
        self._named: dict[str, duckdb.DuckDBPyConnection] = {}

    # -- the database ---------------------------------------------------------

    def open(self, set_up_requirements: bool) -> None:
        root = duckdb.connect(self._db_path, read_only=self._read_only, config=self._config)
        self._db_stack = contextlib.ExitStack()
        self._db_stack.callback(root.close)
        self._root = self._conn = root
        self._named = {}
        if set_up_requirements:
            for record in self._met:
                self._set_up(record)

    def close(self) -> None:
        self._db_stack.close()
        self._root = None

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the current database, closed with it."""
        assert self._root is not None
        cursor = self._root.cursor()
        self._db_stack.callback(cursor.close)
        return cursor

    def _connection(self, name: str | None) -> duckdb.DuckDBPyConnection:
        if name is None:
            return self._conn
        if name not in self._named:
            self._named[name] = self._cursor()
        return self._named[name]

    def run(self, body: Sequence[records.Record], loop_vars: Mapping[str, str]) -> None:
        for record in body:
            if isinstance(record, records.Statement):
                self._statement(record, loop_vars)
            elif isinstance(record, records.Query):
                self._query(record, loop_vars)
            elif isinstance(record, records.Loop):
                self._loop(record, loop_vars)
            elif isinstance(record, records.Require):
                self._require(record)
            elif isinstance(record, records.SetSeed):
                self._set_seed(record)
            elif isinstance(record, records.Load):
                self._load(record, loop_vars)
            elif isinstance(record, records.Restart):
                self._restart(record)
            elif isinstance(record, records.Unzip):
                self._unzip(record, loop_vars)
            else:
                self._require_env(record)

    # -- substitution ---------------------------------------------------------

    def _keywords(self, text: str, location: records.Location) -> str:
        """DuckDB's ``ReplaceKeywords``: variables, then paths."""
        for name, value in self._env.items():
            text = text.replace("${" + name + "}", value).replace("{" + name + "}", value)
        for build in ("{BUILD_DIRECTORY}", "__BUILD_DIRECTORY__"):
            if build in text:
                raise records.SqlLogicTestFailure(
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

    def _sql(self, text: str, location: records.Location, loop_vars: Mapping[str, str]) -> str:
        text = self._keywords(text, location)
        for name, value in loop_vars.items():
            value = self._keywords(value, location)
            text = text.replace("${" + name + "}", value).replace("{" + name + "}", value)
        return text

    @staticmethod
    def _failure(
        location: records.Location, loop_vars: Mapping[str, str], summary: str,
        sections: Sequence[Section],
    ) -> records.SqlLogicTestFailure:
        where = str(location)
        if loop_vars:
            where += " [" + ", ".join(f"{k}={v}" for k, v in loop_vars.items()) + "]"
        body = "".join(f"\n{title}:\n{indent(text)}" for title, text in sections)
        return records.SqlLogicTestFailure(f"{where}: {summary}{body}")

    # -- records ------------------------------------------------------------

    def _statement(self, record: records.Statement, loop_vars: Mapping[str, str]) -> None:
        sql = self._sql(record.sql, record.location, loop_vars)
        self._set_names.update(n.lower() for n in _SET.findall(sql) if n.lower() != "variable")
        error = self._execute(self._connection(record.connection), sql)
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

    @staticmethod
    def _execute(conn: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Error | None:
        """Run to completion (``complete()`` also surfaces late runtime errors)."""
        try:
            conn.execute(sql)
            conn.complete()
        except duckdb.Error as error:
            return error
        return None

    def _error_matches(
        self, record: records.Statement, loop_vars: Mapping[str, str], message: str
    ) -> bool:
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

    def _query(self, record: records.Query, loop_vars: Mapping[str, str]) -> None:
        sql = self._sql(record.sql, record.location, loop_vars)
        expected = [self._keywords(line, record.location) for line in record.expected]
        try:
            result = fetch(self._connection(record.connection), sql)
        except duckdb.Error as error:
            raise self._failure(
                record.location, loop_vars, "query failed",
                [("SQL", sql), ("Expected", "\n".join(expected) or "(no rows)"),
                 ("Error", str(error))],
            ) from None  # fmt: skip
        if len(expected) == 1 and expected[0].startswith("<FILE>:"):
            expected = self._file_values(record, loop_vars, sql, expected[0], result.columns)
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

    def _file_values(
        self,
        record: records.Query,
        loop_vars: Mapping[str, str],
        sql: str,
        line: str,
        columns: Sequence[Column],
    ) -> list[str]:
        """``<FILE>:path``: the expected values, one per line, from a ``|``-separated CSV
        file with a header, read as DuckDB's runner reads it (every column as VARCHAR)."""
        path = self._sql(line.removeprefix("<FILE>:"), record.location, loop_vars)
        names = ", ".join(
            "'" + column.name.replace("'", "''") + "': 'VARCHAR'" for column in columns
        )
        try:
            with duckdb.connect() as reader:
                rows = reader.execute(
                    "SELECT * FROM read_csv(?, header = true, sep = '|', "
                    f"columns = {{{names}}}, auto_detect = false)",
                    [path],
                ).fetchall()
        except duckdb.Error as error:
            raise self._failure(
                record.location, loop_vars, f"could not read the expected result file {path}",
                [("SQL", sql), ("Error", str(error))],
            ) from None  # fmt: skip
        return ["NULL" if value is None else str(value) for row in rows for value in row]

    def _check_label(
        self, record: records.Query, loop_vars: Mapping[str, str], sql: str, actual: str
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

    def _loop(self, record: records.Loop, loop_vars: Mapping[str, str]) -> None:
        for values in record.iterations:
            self.run(record.body, {**loop_vars, **dict(zip(record.names, values, strict=True))})

    def _require(self, record: records.Require) -> None:
        if record.key not in self._requirements:
            if self._strict:
                raise records.SqlLogicTestFailure(
                    f"{record.location}: require {record.key}: no such requirement is "
                    f"registered (strict mode)"
                )
            raise records.SqlLogicTestSkip(f"require {record.key}")
        self._set_up(record)
        self._met.append(record)

    def _set_up(self, record: records.Require) -> None:
        cleanup = self._requirements[record.key](self._conn)
        if cleanup is not None:
            self._db_stack.callback(cleanup)

    def _require_env(self, record: records.RequireEnv) -> None:
        if record.default is not None:  # test-env: no test configuration, so the default
            self._env[record.variable] = record.default
            return
        actual = os.environ.get(record.variable)
        if actual is None:
            raise records.SqlLogicTestSkip(f"require-env {record.variable}")
        if record.value is not None and actual != record.value:
            raise records.SqlLogicTestSkip(f"require-env {record.variable} {record.value}")
        if record.variable in self._env:
            raise records.SqlLogicTestFailure(
                f"{record.location}: environment variable {record.variable} is already defined"
            )
        self._env[record.variable] = actual

    def _set_seed(self, record: records.SetSeed) -> None:
        self._conn.execute("SELECT setseed(?)", [record.value]).fetchall()

    def _load(self, record: records.Load, loop_vars: Mapping[str, str]) -> None:
        """As DuckDB's ``load``: a writable database file starts empty."""
        path = self._sql(record.path, record.location, loop_vars) or ":memory:"
        if not record.read_only and path != ":memory:":
            for stale in (path, path + ".wal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
        self.close()
        self._db_path, self._read_only = path, record.read_only
        if record.version is not None:
            self._config = {"storage_compatibility_version": record.version}
        self.open(set_up_requirements=True)

    def _restart(self, record: records.Restart) -> None:
        """``restart`` reopens the database (an in-memory one comes back empty) and sets
        again the settings changed so far, as DuckDB's runner carries its configuration
        over; ``reconnect`` opens a new main connection, keeping the named ones."""
        if record.reconnect:
            self._conn = self._cursor()
            return
        before = self._settings()
        self.close()
        self.open(set_up_requirements=record.load_extensions)
        after = self._settings()
        for name, value in before.items():
            if after.get(name, value) == value:
                continue
            try:
                self._conn.execute(f"SET {name} = ?", [value]).fetchall()
            except duckdb.Error as error:
                raise records.SqlLogicTestFailure(
                    f"{record.location}: unsupported: restart cannot carry the setting "
                    f"{name} = {value!r} over to the reopened database: {error}"
                ) from None

    def _unzip(self, record: records.Unzip, loop_vars: Mapping[str, str]) -> None:
        source = self._keywords(record.source, record.location)
        default = "{TEST_DIR}/" + pathlib.Path(source).name.removesuffix(".gz")
        target = self._keywords(record.target or default, record.location)
        try:
            with gzip.open(source, "rb") as packed, open(target, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked)
        except OSError as error:
            raise self._failure(
                record.location, loop_vars, f"unzip {source} failed: {error}", []
            ) from None

    def _settings(self) -> dict[str, str | None]:
        """The settings ``duckdb_settings()`` lists, and those the file ``SET`` otherwise."""
        rows = self._conn.execute("SELECT name, value FROM duckdb_settings()").fetchall()
        settings: dict[str, str | None] = dict(rows)
        for name in self._set_names - settings.keys():
            with contextlib.suppress(duckdb.Error):
                (settings[name],) = self._conn.execute(
                    "SELECT current_setting(?)::VARCHAR", [name]
                ).fetchone() or (None,)
        return settings


def run_file(
    path: str | os.PathLike[str],
    requirements: Mapping[str, records.Requirement] | None = None,
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
    parsed = parse(path.read_text(encoding="utf-8"), name)
    with contextlib.ExitStack() as stack:
        test_dir = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="sqllogictest-", ignore_cleanup_errors=True)
        )
        runner = _FileRunner(requirements or {}, strict, test_dir, name)
        stack.callback(runner.close)
        runner.open(set_up_requirements=False)
        runner.run(parsed, {})

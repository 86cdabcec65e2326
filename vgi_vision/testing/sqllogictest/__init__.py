"""Run DuckDB sqllogictest files (``.test``) as pytest items, with DuckDB's semantics.

Why: DuckDB extensions describe their SQL behaviour in DuckDB's sqllogictest
dialect, and DuckDB's own runner only exists inside its C++ unittest binary.
This package lets the same ``.test`` files run from pytest against the Python
``duckdb`` package, so they stay portable to DuckDB's runner while fitting
this project's Python test suite. DuckDB's C++ runner (``test/sqlite/`` in the
duckdb repository) is the reference: where this runner differs, it fails with
an "unsupported" message instead of passing or failing for the wrong reason.

Layout, one module per step:

- ``records``: the immutable records a file parses into, ``Location``, the errors;
- ``parser``: text to records (``parse``);
- ``compare``: rendering values as DuckDB's runner does, sorting, hashing and
  comparing a query result with the expected lines;
- ``runner``: executes records on a fresh in-memory connection (``run_file``);
- ``plugin``: the pytest layer (``collect_file``) that turns the outcome into
  pass / fail / skip.

Implemented as DuckDB does: ``statement ok|error|maybe``, ``query`` with sort modes,
labels and connection names, ``N values hashing to MD5`` and ``<FILE>:`` results,
``hash-threshold``, ``loop``/``foreach`` (with DuckDB's ``<integral>``-style groups),
``require``, ``require-env``, ``test-env``, ``set variable``, ``set seed``,
``mode skip``/``unskip``, ``skipif``/``onlyif`` on a system name, ``halt``, ``tags``,
``load``, ``restart``, ``reconnect`` and ``unzip``.
Unsupported, and failing as such: ``concurrentloop``/``concurrentforeach``, ``include``,
``sleep``, ``continue``, ``reset``, other ``set`` and ``mode`` forms,
conditions on variables (``skipif i=2``) and ``<variable:...>`` loop groups.
``scripts/run_duckdb_tests.py`` runs DuckDB's own files through it.

It imports pytest; nothing in the runtime package imports it.
"""

from vgi_vision.testing.sqllogictest.parser import parse
from vgi_vision.testing.sqllogictest.plugin import SqlLogicTestFile, SqlLogicTestItem, collect_file
from vgi_vision.testing.sqllogictest.records import (
    Cleanup,
    Load,
    Location,
    Loop,
    Query,
    Record,
    Require,
    RequireEnv,
    Requirement,
    Restart,
    SetSeed,
    SortMode,
    SqlLogicParseError,
    SqlLogicTestError,
    SqlLogicTestFailure,
    SqlLogicTestSkip,
    Statement,
    Unzip,
)
from vgi_vision.testing.sqllogictest.runner import run_file

__all__ = [
    "Cleanup",
    "Load",
    "Location",
    "Loop",
    "Query",
    "Record",
    "Require",
    "RequireEnv",
    "Requirement",
    "Restart",
    "SetSeed",
    "SortMode",
    "SqlLogicParseError",
    "SqlLogicTestError",
    "SqlLogicTestFailure",
    "SqlLogicTestFile",
    "SqlLogicTestItem",
    "SqlLogicTestSkip",
    "Statement",
    "Unzip",
    "collect_file",
    "parse",
    "run_file",
]

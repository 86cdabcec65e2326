"""Run DuckDB's own sqllogictest files through this project's runner and tally the outcomes.

Usage::

    git -C /path/to/duckdb archive HEAD test/sql/function/list test/sql/aggregate \\
        | tar -x -C /tmp/duckdb-tests
    python -m scripts.run_duckdb_tests /tmp/duckdb-tests/test/sql/function/list ...

Each ``.test`` file runs in a child process of its own (a crash or a hang costs one file,
not the run) against plain ``duckdb``, without a vgi-vision worker. ``require NAME`` loads
an extension when the installed ``duckdb`` already has it (nothing is downloaded) and
skips the file otherwise, as DuckDB's runner does; the names DuckDB's runner answers
itself (``64bit``, ``vector_size 2048``, ``skip_reload``...) are answered for a release
build. Files run from ``--root`` (by default
the folder above the first ``test/`` in the path), since DuckDB's files name data files
relative to its repository root.

The tally counts passed / failed / unsupported / skipped files; failures are split into
DuckDB errors (usually the installed ``duckdb`` is older or newer than the test file) and
result mismatches, and every distinct reason is listed with its files.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping

import duckdb

from vgi_vision.testing.sqllogictest import (
    Requirement,
    SqlLogicParseError,
    SqlLogicTestError,
    SqlLogicTestSkip,
    run_file,
)


def available_extensions() -> list[str]:
    """Extensions the installed duckdb can load without downloading anything."""
    with duckdb.connect() as conn:
        rows = conn.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded OR installed"
        ).fetchall()
    return [name for (name,) in rows]


def extension_requirement(name: str) -> Requirement:
    def load(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(f"LOAD {name}")

    return load


def _no_setup(conn: duckdb.DuckDBPyConnection) -> None:
    return None


def _bytes(text: str) -> int:
    """``8gb``, ``500mb``... as DuckDB's ParseMemoryLimit reads them (powers of 1000)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", text.strip().lower())
    if not match:
        raise ValueError(text)
    return int(float(match.group(1)) * 1000 ** " kmgt".index(match.group(2) or " "))


def builtin_requirement(key: str) -> bool | None:
    """What DuckDB's runner decides itself in ``CheckRequire`` (None: not one of those).

    Answered for a release build of duckdb such as the Python package: vector size 2048,
    no sanitizers, no verification modes, no forced storage, no reloading of files.
    ``longdouble`` (the precision duckdb was compiled with) cannot be told from Python, so
    it stays missing and skips the file.
    """
    name, *args = key.split()
    name = name.lower()
    present_in_release_builds = {
        "notmusl", "noforcestorage", "no_force_storage", "nothreadsan", "strinline",
        "skip_reload", "no_alternative_verify", "no_latest_storage", "no_vector_verification",
    }  # fmt: skip
    if name in present_in_release_builds and not args:
        return True
    if name in ("windows", "notwindows", "mingw", "notmingw") and not args:
        return (sys.platform == "win32") == (name in ("windows", "mingw"))
    if name == "64bit" and not args:
        return sys.maxsize > 2**32
    if name in ("vector_size", "exact_vector_size") and len(args) == 1 and args[0].isdigit():
        return 2048 >= int(args[0]) if name == "vector_size" else int(args[0]) == 2048
    if name in ("ram", "disk_space") and len(args) == 1:
        if name == "ram":
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        else:
            available = shutil.disk_usage(".").free
        try:
            return available >= _bytes(args[0])
        except ValueError:
            return None
    return None


class DuckDBRequirements(Mapping[str, Requirement]):
    """``require`` as DuckDB's runner answers it: its built-in names, then extensions the
    installed duckdb can load; anything else is missing and skips the file."""

    def __init__(self) -> None:
        self._extensions = {name: extension_requirement(name) for name in available_extensions()}

    def __getitem__(self, key: str) -> Requirement:
        if builtin_requirement(key):
            return _no_setup
        return self._extensions[key]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        builtin = builtin_requirement(key)
        return builtin if builtin is not None else key in self._extensions

    def __iter__(self) -> Iterator[str]:
        return iter(self._extensions)

    def __len__(self) -> int:
        return len(self._extensions)


def outcome(path: pathlib.Path) -> dict[str, str]:
    """Run one file in this process; the outcome as a JSON-able dict."""
    requirements = DuckDBRequirements()
    try:
        run_file(path, requirements)
    except SqlLogicTestSkip as skip:
        return {"status": "skipped", "reason": skip.reason}
    except SqlLogicParseError as error:
        status = "unsupported" if "unsupported" in str(error) else "failed"
        return {"status": status, "reason": str(error), "kind": "parse"}
    except SqlLogicTestError as error:
        status = "unsupported" if "unsupported" in str(error).split("\n")[0] else "failed"
        return {"status": status, "reason": str(error), "kind": failure_kind(str(error))}
    return {"status": "passed"}


_ENGINE_ERRORS = ("query failed", "statement failed", "statement failed with an unexpected error")


def failure_kind(report: str) -> str:
    summary = summary_line(report)
    if "No such file or directory" in report:
        return "missing data file"  # DuckDB's data/ folder was not extracted
    if any(summary.startswith(prefix) for prefix in _ENGINE_ERRORS):
        return "duckdb error"
    return "mismatch"


def summary_line(report: str) -> str:
    """The first line without its ``path:line [vars]:`` prefix."""
    first = report.split("\n")[0]
    first = re.sub(r" at \S+:\d+$", "", first)
    return re.sub(r"^\S+:\d+(?: \[[^\]]*\])?: ", "", first)


def reason_key(result: dict[str, str]) -> str:
    """What groups failures: the summary, plus the DuckDB error's first line when there is one."""
    report = result["reason"]
    key = summary_line(report)
    key = re.sub(r"\(query [A-Z]+ \w+\)$", "", key).strip()
    match = re.search(r"\n(?:Error|Actual error):\n {4}(.*)", report)
    if match:
        error = re.sub(r"\"[^\"]*\"|'[^']*'", "'…'", match.group(1))
        key += ": " + error[:160]
    elif result.get("kind") == "mismatch":
        key = re.sub(r"expected .*, got .*$", "expected …, got …", key)
        key = re.sub(r"\d+", "N", key)
    return key


def run_child(path: pathlib.Path, root: pathlib.Path, timeout: float) -> dict[str, str]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(path.resolve())],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timeout after {timeout:g}s", "kind": "timeout"}
    lines = done.stdout.strip().split("\n")
    try:
        result: dict[str, str] = json.loads(lines[-1])
    except (json.JSONDecodeError, IndexError):
        tail = (done.stderr.strip().split("\n") or [""])[-1]
        return {
            "status": "failed",
            "reason": f"runner crashed (exit {done.returncode}): {tail}",
            "kind": "crash",
        }
    return result


def default_root(path: pathlib.Path) -> pathlib.Path:
    parts = path.resolve().parts
    if "test" in parts:
        return pathlib.Path(*parts[: parts.index("test")])
    return pathlib.Path.cwd()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path, help="folders or .test files")
    parser.add_argument("--root", type=pathlib.Path, help="working directory of every file")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per file")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every file")
    parser.add_argument("--slow", action="store_true", help="also run *.test_slow files")
    parser.add_argument("--one", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(outcome(args.one)))
        return 0
    if not args.paths:
        parser.error("give at least one folder or .test file")

    patterns = ("*.test", "*.test_slow") if args.slow else ("*.test",)
    files = sorted(
        {f for p in args.paths for g in patterns for f in ([p] if p.is_file() else p.rglob(g))}
    )
    root = args.root or default_root(args.paths[0])
    results: dict[pathlib.Path, dict[str, str]] = {}
    for number, path in enumerate(files, 1):
        results[path] = run_child(path, root, args.timeout)
        if args.verbose:
            print(f"[{number}/{len(files)}] {results[path]['status']:11} {path}", flush=True)

    tally = collections.Counter(r["status"] for r in results.values())
    kinds = collections.Counter(r["kind"] for r in results.values() if r["status"] == "failed")
    print(
        f"\nduckdb {duckdb.__version__}: a file written for another version can fail on a "
        f"missing or changed function ('duckdb error', 'mismatch') without a runner bug"
    )
    print(
        f"{len(files)} files: "
        + ", ".join(f"{tally[s]} {s}" for s in ("passed", "failed", "unsupported", "skipped"))
    )
    if kinds:
        print("failed by kind: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
    for status in ("skipped", "unsupported", "failed"):
        groups: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
        for path, result in results.items():
            if result["status"] == status:
                key = result["reason"] if status == "skipped" else reason_key(result)
                if status == "failed":
                    key = f"[{result['kind']}] {key}"
                groups[key].append(path)
        if not groups:
            continue
        print(f"\n{status.upper()} ({tally[status]} files, {len(groups)} distinct reasons)")
        for key, paths in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
            print(f"  {len(paths):3}  {key}")
            shown = ", ".join(relative(p, root) for p in paths[:3])
            more = f" (+{len(paths) - 3})" if len(paths) > 3 else ""
            print(f"         {shown}{more}")
    return 0


def relative(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())

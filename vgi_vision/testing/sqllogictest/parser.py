"""Parse sqllogictest text into records (``parse``), as DuckDB's ``sqllogic_parser.cpp`` does.

The main loop reads each record's header line once, tokenizes it on whitespace,
applies ``skipif``/``onlyif`` and dispatches on the first word; a handler gets the
header's location and arguments and only consumes the record's body (SQL, ``----``,
expected lines). Parsing happens before anything runs, so an unsupported directive
fails the file up front instead of after half of it ran.

As in DuckDB, only a truly empty line ends a record (a line of spaces belongs to the
SQL), a line starting with ``#`` is a comment, and a single-line directive must be
followed by an empty line or a comment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from vgi_vision.testing.sqllogictest.records import (
    Load,
    Location,
    Loop,
    Query,
    Record,
    Require,
    RequireEnv,
    Restart,
    SetSeed,
    SortMode,
    SqlLogicParseError,
    Statement,
    Unzip,
    duckdb_split,
)

_SEPARATOR = "----"
_SORT_MODES = {
    "nosort": SortMode.NOSORT,
    "none": SortMode.NOSORT,  # DuckDB's alias
    "rowsort": SortMode.ROWSORT,
    "sort": SortMode.ROWSORT,  # DuckDB's alias
    "valuesort": SortMode.VALUESORT,
}
# Directives that occupy exactly one line; DuckDB insists on a blank line or
# comment after them, which catches a forgotten blank line before a record.
_SINGLE_LINE = frozenset(
    {
        "hash-threshold", "halt", "mode", "set", "reset", "loop", "foreach", "concurrentloop",
        "concurrentforeach", "endloop", "require", "require-env", "test-env", "load", "restart",
        "reconnect", "sleep", "unzip", "tags", "continue", "include",
    }
)  # fmt: skip
# DuckDB's directives that this runner does not implement: they fail as "unsupported",
# anything else as "unknown" (DuckDB's runner rejects those too).
_UNSUPPORTED = frozenset(
    {
        "sleep", "include", "continue", "reset", "concurrentloop",
        "concurrentforeach",
    }
)  # fmt: skip
# ``foreach`` groups DuckDB expands (``LoopCommand::ForEachTokenReplace``).
_SIGNED = ("tinyint", "smallint", "integer", "bigint", "hugeint")
_UNSIGNED = ("utinyint", "usmallint", "uinteger", "ubigint", "uhugeint")
_INTEGRAL = _SIGNED + _UNSIGNED
_NUMERIC = _INTEGRAL + ("float", "double")
_FOREACH_GROUPS: Mapping[str, tuple[str, ...]] = {
    "<signed>": _SIGNED,
    "<unsigned>": _UNSIGNED,
    "<integral>": _INTEGRAL,
    "<numeric>": _NUMERIC,
    "<alltypes>": _NUMERIC + ("bool", "interval", "varchar"),
    "<compression>": (
        "none", "uncompressed", "rle", "bitpacking", "dictionary", "fsst", "dict_fsst", "alp",
        "alprd",
    ),
}  # fmt: skip


def _is_blank_or_comment(line: str) -> bool:
    return line == "" or line.startswith("#")


def _unsupported(what: str, location: Location) -> SqlLogicParseError:
    return SqlLogicParseError(f"unsupported directive '{what}' at {location}")


def _foreach_values(tokens: list[str], location: Location) -> list[str]:
    """Expand DuckDB's ``<group>`` tokens and ``!value`` removals, in order."""
    values: list[str] = []
    for token in tokens:
        name = token.strip().lower()
        if name.startswith("!") and token[1:] in values:
            values.remove(token[1:])
        elif name in _FOREACH_GROUPS:
            values.extend(_FOREACH_GROUPS[name])
        elif name.startswith("<") and name.endswith(">"):
            raise _unsupported(f"foreach group {token}", location)
        else:
            values.append(token)
    return values


class _Parser:
    """Single pass over the lines; loops nest through a stack of record lists."""

    def __init__(self, text: str, path: str) -> None:
        self._lines = [line.replace("\r", "") for line in text.split("\n")]
        self._path = path
        self._pos = 0
        self._blocks: list[list[Record]] = [[]]
        self._open_loops: list[tuple[Location, tuple[str, ...], tuple[tuple[str, ...], ...]]] = []
        self._skip_level = 0
        self._hash_threshold = 0
        self._halted = False

    # -- helpers ----------------------------------------------------------

    def _location(self, pos: int | None = None) -> Location:
        return Location(self._path, (self._pos if pos is None else pos) + 1)

    def _at_end(self) -> bool:
        return self._pos >= len(self._lines)

    def _seek_record(self) -> bool:
        while not self._at_end() and _is_blank_or_comment(self._lines[self._pos]):
            self._pos += 1
        return not self._at_end()

    def _header(self) -> tuple[Location, list[str]]:
        """Consume the line at the cursor: its location and its whitespace-separated words."""
        location = self._location()
        tokens = self._lines[self._pos].split()
        if not tokens:
            raise SqlLogicParseError(
                f"{location}: a line of only spaces where a record should start "
                f"(only an empty line separates records)"
            )
        self._pos += 1
        return location, tokens

    def _read_sql(self) -> str:
        """SQL runs until an empty line, a comment or ``----`` (as in DuckDB)."""
        start = self._pos
        while not self._at_end():
            line = self._lines[self._pos]
            if _is_blank_or_comment(line) or line == _SEPARATOR:
                break
            self._pos += 1
        return "\n".join(self._lines[start : self._pos])

    def _read_after_separator(self) -> list[str] | None:
        """Lines after ``----`` up to an empty line; None when there is no ``----``.

        Only a truly empty line ends the block: a line of spaces or one
        starting with ``#`` can be a legitimate result value.
        """
        if self._at_end() or self._lines[self._pos] != _SEPARATOR:
            return None
        self._pos += 1
        start = self._pos
        while not self._at_end() and self._lines[self._pos] != "":
            self._pos += 1
        return self._lines[start : self._pos]

    def _skip_body(self) -> None:
        """Consume a record's body without interpreting it (skipif, mode skip)."""
        self._read_sql()
        self._read_after_separator()

    def _check_separated(self, location: Location) -> None:
        if not self._at_end() and not _is_blank_or_comment(self._lines[self._pos]):
            raise SqlLogicParseError(
                f"{location}: a single-line directive must be followed by an empty line"
            )

    def _conditions(
        self, location: Location, tokens: list[str]
    ) -> tuple[Location, list[str], bool]:
        """Apply ``skipif``/``onlyif`` headers; this system is ``duckdb``.

        Returns the location and words of the record they guard, and whether it is excluded.
        """
        excluded = False
        while tokens[0] in ("skipif", "onlyif"):
            if len(tokens) < 2:
                raise SqlLogicParseError(f"{location}: {tokens[0]} takes a system name")
            system = tokens[1].lower()
            if any(c in system for c in "=<>"):
                raise _unsupported(f"{tokens[0]} {tokens[1]} (a condition on a variable)", location)
            if (system == "duckdb") == (tokens[0] == "skipif"):
                excluded = True
            if self._at_end() or _is_blank_or_comment(self._lines[self._pos]):
                raise SqlLogicParseError(
                    f"{self._location()}: {tokens[0]} must be followed by a record"
                )
            location, tokens = self._header()
        return location, tokens, excluded

    # -- driver -------------------------------------------------------------

    def parse(self) -> tuple[Record, ...]:
        while not self._halted and self._seek_record():
            location, tokens = self._header()
            location, tokens, excluded = self._conditions(location, tokens)
            directive, args = tokens[0], tokens[1:]
            if directive in _SINGLE_LINE:
                self._check_separated(location)
            if excluded or (self._skip_level and directive != "mode"):
                self._skip_body()
                continue
            handler = self._HANDLERS.get(directive)
            if handler is None:
                if directive in _UNSUPPORTED:
                    raise _unsupported(directive, location)
                raise SqlLogicParseError(f"unknown directive '{directive}' at {location}")
            record = handler(self, location, args)
            if record is not None:
                self._blocks[-1].append(record)
        if self._open_loops:
            raise SqlLogicParseError(f"{self._open_loops[-1][0]}: loop without endloop")
        return tuple(self._blocks[0])

    # -- directives: each consumes only its body ----------------------------

    def _statement(self, location: Location, args: list[str]) -> Statement:
        if not args or args[0] not in ("ok", "error", "maybe", "debug", "debug_skip"):
            raise SqlLogicParseError(
                f"{location}: expected 'statement ok', 'statement error' or 'statement maybe'"
            )
        if args[0].startswith("debug") or len(args) > 2:
            raise _unsupported(" ".join(["statement", *args]), location)
        sql = self._read_sql()
        if not sql:
            raise SqlLogicParseError(f"{location}: statement without SQL")
        message = self._read_after_separator()
        if message is not None and args[0] == "ok":
            raise SqlLogicParseError(
                f"{location}: only 'statement error' can have an expected message"
            )
        if message is None and args[0] != "ok":
            raise SqlLogicParseError(
                f"{location}: 'statement {args[0]}' needs the expected error message after "
                f"'----' (DuckDB's runner requires it)"
            )
        connection = args[1] if len(args) == 2 else None
        return Statement(
            location, sql, args[0] == "error", "\n".join(message or []), args[0] == "maybe",
            connection,
        )  # fmt: skip

    def _query(self, location: Location, args: list[str]) -> Query:
        if not args:
            raise SqlLogicParseError(
                f"{location}: query needs column types, one letter per column (e.g. 'query IT')"
            )
        wrong = re.search(r"[^TIR]", args[0])
        if wrong:
            raise SqlLogicParseError(
                f"{location}: unknown column type '{wrong.group()}' in 'query {args[0]}' "
                f"(one of T, I or R per column)"
            )
        if len(args) > 3:
            raise _unsupported(" ".join(["query", *args]), location)
        sort_mode, connection = SortMode.NOSORT, None
        if len(args) >= 2:
            # DuckDB reads a second word that is no sort mode as a connection name
            if args[1] in _SORT_MODES:
                sort_mode = _SORT_MODES[args[1]]
            else:
                connection = args[1]
        label = args[2] if len(args) == 3 else None
        sql = self._read_sql()
        if not sql:
            raise SqlLogicParseError(f"{location}: query without SQL")
        expected = self._read_after_separator() or []
        return Query(
            location, sql, args[0], sort_mode, tuple(expected), label, self._hash_threshold,
            connection,
        )  # fmt: skip

    def _require(self, location: Location, args: list[str]) -> Require:
        if not args:
            raise SqlLogicParseError(f"{location}: require needs a name")
        if self._open_loops:
            raise SqlLogicParseError(f"{location}: require cannot be used inside a loop")
        return Require(location, args[0], tuple(args[1:]))

    def _require_env(self, location: Location, args: list[str]) -> RequireEnv:
        if len(args) not in (1, 2):
            raise SqlLogicParseError(
                f"{location}: require-env takes a variable name and an optional value"
            )
        if self._open_loops:
            raise SqlLogicParseError(f"{location}: require-env cannot be used inside a loop")
        return RequireEnv(location, args[0], args[1] if len(args) == 2 else None)

    def _test_env(self, location: Location, args: list[str]) -> RequireEnv:
        if len(args) != 2:
            raise SqlLogicParseError(f"{location}: test-env takes a variable name and a default")
        if self._open_loops:
            raise SqlLogicParseError(f"{location}: test-env cannot be used inside a loop")
        return RequireEnv(location, args[0], None, default=args[1])

    def _loop(self, location: Location, args: list[str]) -> None:
        if len(args) != 3:
            raise SqlLogicParseError(f"{location}: expected 'loop NAME START END'")
        try:
            start, end = int(args[1]), int(args[2])
        except ValueError:
            raise SqlLogicParseError(f"{location}: loop bounds must be integers") from None
        self._open_loop(location, (args[0],), tuple((str(i),) for i in range(start, end)))

    def _foreach(self, location: Location, args: list[str]) -> None:
        """One name binds each whole value; ``a,b`` splits every value on its commas."""
        if len(args) < 2:
            raise SqlLogicParseError(f"{location}: expected 'foreach NAME VALUE...'")
        values = _foreach_values(args[1:], location)
        if "," not in args[0]:
            self._open_loop(location, (args[0],), tuple((value,) for value in values))
            return
        names = tuple(duckdb_split(args[0], ","))
        iterations = []
        for value in values:
            parts = tuple(duckdb_split(value, ","))
            if len(parts) != len(names):
                raise SqlLogicParseError(
                    f"{location}: foreach value {value!r} does not match the names {args[0]!r}"
                )
            iterations.append(parts)
        self._open_loop(location, names, tuple(iterations))

    def _open_loop(
        self, location: Location, names: tuple[str, ...], iterations: tuple[tuple[str, ...], ...]
    ) -> None:
        self._open_loops.append((location, names, iterations))
        self._blocks.append([])

    def _endloop(self, location: Location, args: list[str]) -> Loop:
        if args:
            raise SqlLogicParseError(f"{location}: endloop takes no arguments")
        if not self._open_loops:
            raise SqlLogicParseError(f"{location}: endloop without loop")
        start, names, iterations = self._open_loops.pop()
        return Loop(start, names, iterations, tuple(self._blocks.pop()))

    def _halt(self, location: Location, args: list[str]) -> None:
        if self._open_loops:
            raise SqlLogicParseError(f"{location}: halt inside a loop is not supported")
        self._halted = True

    def _mode(self, location: Location, args: list[str]) -> None:
        if args[:1] == ["skip"]:  # DuckDB: the words after 'skip' are the reason
            self._skip_level += 1
        elif args == ["unskip"]:
            if not self._skip_level:
                raise SqlLogicParseError(f"{location}: mode unskip without mode skip")
            self._skip_level -= 1
        else:
            raise _unsupported(" ".join(["mode", *args]), location)

    def _hash_threshold_directive(self, location: Location, args: list[str]) -> None:
        """Applies to the queries parsed after it, as in DuckDB (loop bodies included)."""
        if len(args) != 1 or not args[0].isdigit():
            raise SqlLogicParseError(f"{location}: hash-threshold takes a number")
        self._hash_threshold = int(args[0])

    def _set(self, location: Location, args: list[str]) -> SetSeed | RequireEnv:
        if args[:1] == ["variable"] and len(args) == 3 and not args[2].startswith("<"):
            # DuckDB: defines {NAME} for the SQL that follows, as test-env does
            return RequireEnv(location, args[1], None, default=args[2])
        if args[:1] != ["seed"]:
            raise _unsupported(
                " ".join(["set", *args[: 2 if args[:1] == ["variable"] else 1]]), location
            )
        try:
            (value,) = (float(word) for word in args[1:])
        except ValueError:
            raise SqlLogicParseError(f"{location}: set seed takes one number") from None
        return SetSeed(location, value)

    def _load(self, location: Location, args: list[str]) -> Load:
        """No path: a new in-memory database, as in DuckDB."""
        if len(args) > 3:
            raise _unsupported(" ".join(["load", *args]), location)
        if len(args) >= 2 and args[1].lower() not in ("readonly", "readwrite"):
            raise SqlLogicParseError(
                f"{location}: load takes 'readonly' or 'readwrite' after the path"
            )
        path = args[0] if args else ""
        read_only = len(args) >= 2 and args[1].lower() == "readonly"
        return Load(location, path, read_only, args[2] if len(args) == 3 else None)

    def _restart(self, location: Location, args: list[str]) -> Restart:
        if args not in ([], ["no_extension_load"]):
            raise SqlLogicParseError(f"{location}: restart takes only 'no_extension_load'")
        return Restart(location, load_extensions=not args)

    def _reconnect(self, location: Location, args: list[str]) -> Restart:
        if args:
            raise SqlLogicParseError(f"{location}: reconnect takes no arguments")
        return Restart(location, reconnect=True)

    def _unzip(self, location: Location, args: list[str]) -> Unzip:
        if len(args) not in (1, 2):
            raise SqlLogicParseError(f"{location}: expected 'unzip SOURCE.gz [TARGET]'")
        if not args[0].endswith(".gz"):
            raise SqlLogicParseError(f"{location}: unzip: {args[0]} has no .gz extension")
        target = args[1] if len(args) == 2 and args[1] != "NULL" else None
        return Unzip(location, args[0], target)

    def _tags(self, location: Location, args: list[str]) -> None:
        """Tags select files in DuckDB's CI; with no selection every file runs."""
        if not args:
            raise SqlLogicParseError(f"{location}: tags needs at least one tag")

    _HANDLERS: Mapping[str, Callable[[_Parser, Location, list[str]], Record | None]] = {
        "statement": _statement,
        "query": _query,
        "require": _require,
        "require-env": _require_env,
        "test-env": _test_env,
        "loop": _loop,
        "foreach": _foreach,
        "endloop": _endloop,
        "halt": _halt,
        "mode": _mode,
        "hash-threshold": _hash_threshold_directive,
        "set": _set,
        "tags": _tags,
        "load": _load,
        "restart": _restart,
        "reconnect": _reconnect,
        "unzip": _unzip,
    }


def parse(text: str, path: str = "<string>") -> tuple[Record, ...]:
    """Parse sqllogictest text into records; ``path`` is only used in messages.

    Parsing happens before anything runs, so an unsupported directive anywhere
    (outside ``mode skip`` and after ``halt`` excepted) fails the file up front.
    """
    return _Parser(text, path).parse()

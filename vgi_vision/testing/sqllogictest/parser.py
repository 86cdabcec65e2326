"""Parse sqllogictest text into records (``parse``).

Parsing happens before anything runs, so an unsupported directive fails the
file up front instead of after half of it ran.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from vgi_vision.testing.sqllogictest.records import (
    Location,
    Loop,
    Query,
    Record,
    Require,
    RequireEnv,
    SortMode,
    SqlLogicParseError,
    Statement,
)

_SEPARATOR = "----"
_SORT_MODES = {
    "nosort": SortMode.NOSORT,
    "rowsort": SortMode.ROWSORT,
    "sort": SortMode.ROWSORT,  # DuckDB's alias
    "valuesort": SortMode.VALUESORT,
}
# Directives that occupy exactly one line; DuckDB insists on a blank line or
# comment after them, which catches a forgotten blank line before a record.
_SINGLE_LINE = frozenset({"require", "require-env", "loop", "foreach", "endloop", "halt", "mode"})


def _is_blank(line: str) -> bool:
    return not line.strip()


def _is_blank_or_comment(line: str) -> bool:
    return _is_blank(line) or line.startswith("#")


def _unsupported(what: str, location: Location) -> SqlLogicParseError:
    return SqlLogicParseError(f"unsupported directive '{what}' at {location}")


class _Parser:
    """Single pass over the lines; loops nest through a stack of record lists."""

    def __init__(self, text: str, path: str) -> None:
        self._lines = [line.rstrip("\r") for line in text.split("\n")]
        self._path = path
        self._pos = 0
        self._blocks: list[list[Record]] = [[]]
        self._open_loops: list[tuple[Location, tuple[str, ...], tuple[tuple[str, ...], ...]]] = []
        self._skip_level = 0
        self._halted = False

    # -- helpers ----------------------------------------------------------

    def _location(self) -> Location:
        return Location(self._path, self._pos + 1)

    def _error(self, message: str) -> SqlLogicParseError:
        return SqlLogicParseError(f"{self._location()}: {message}")

    def _at_end(self) -> bool:
        return self._pos >= len(self._lines)

    def _tokens(self) -> list[str]:
        return self._lines[self._pos].split()

    def _seek_record(self) -> bool:
        while not self._at_end() and _is_blank_or_comment(self._lines[self._pos]):
            self._pos += 1
        return not self._at_end()

    def _read_sql(self) -> str:
        """SQL runs until a blank line, a comment or ``----`` (as in DuckDB)."""
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

    def _skip_record(self) -> None:
        """Consume a record without interpreting it (skipif, mode skip)."""
        self._pos += 1
        self._read_sql()
        self._read_after_separator()

    def _check_separated(self) -> None:
        following = self._pos + 1
        if following < len(self._lines) and not _is_blank_or_comment(self._lines[following]):
            raise self._error("a single-line directive must be followed by an empty line")

    def _apply_conditions(self, tokens: list[str]) -> tuple[list[str], bool]:
        """Handle ``skipif``/``onlyif`` prefixes; this system is ``duckdb``."""
        excluded = False
        while tokens[0] in ("skipif", "onlyif"):
            if len(tokens) != 2:
                raise self._error(f"{tokens[0]} takes exactly one system name")
            if (tokens[1].lower() == "duckdb") == (tokens[0] == "skipif"):
                excluded = True
            self._pos += 1
            if self._at_end() or _is_blank_or_comment(self._lines[self._pos]):
                raise self._error(f"{tokens[0]} must be followed by a record")
            tokens = self._tokens()
        return tokens, excluded

    # -- driver -------------------------------------------------------------

    def parse(self) -> tuple[Record, ...]:
        while not self._halted and self._seek_record():
            tokens, excluded = self._apply_conditions(self._tokens())
            directive, args = tokens[0], tokens[1:]
            if excluded:
                self._skip_record()
                continue
            if directive in _SINGLE_LINE:
                self._check_separated()
            if directive == "mode":
                self._mode(args)
                continue
            if self._skip_level:
                self._skip_record()
                continue
            handler = self._HANDLERS.get(directive)
            if handler is None:
                raise _unsupported(directive, self._location())
            record = handler(self, args)
            if record is not None:
                self._blocks[-1].append(record)
        if self._open_loops:
            raise SqlLogicParseError(f"{self._open_loops[-1][0]}: loop without endloop")
        return tuple(self._blocks[0])

    # -- directives ---------------------------------------------------------

    def _statement(self, args: list[str]) -> Statement:
        location = self._location()
        if len(args) != 1 or args[0] not in ("ok", "error"):
            raise _unsupported(" ".join(["statement", *args]), location)
        self._pos += 1
        sql = self._read_sql()
        if not sql:
            raise SqlLogicParseError(f"{location}: statement without SQL")
        message = self._read_after_separator()
        if message is not None and args[0] == "ok":
            raise SqlLogicParseError(
                f"{location}: only 'statement error' can have an expected message"
            )
        return Statement(location, sql, args[0] == "error", "\n".join(message or []))

    def _query(self, args: list[str]) -> Query:
        location = self._location()
        if not args or not re.fullmatch(r"[A-Z]+", args[0]):
            raise SqlLogicParseError(
                f"{location}: query needs column types, one letter per column (e.g. 'query IT')"
            )
        if len(args) > 2 or (len(args) == 2 and args[1] not in _SORT_MODES):
            raise _unsupported(" ".join(["query", *args]), location)
        sort_mode = _SORT_MODES[args[1]] if len(args) == 2 else SortMode.NOSORT
        self._pos += 1
        sql = self._read_sql()
        if not sql:
            raise SqlLogicParseError(f"{location}: query without SQL")
        expected = self._read_after_separator() or []
        return Query(location, sql, args[0], sort_mode, tuple(expected))

    def _require(self, args: list[str]) -> Require:
        if len(args) != 1:
            raise self._error("require takes exactly one name")
        if self._open_loops:
            raise self._error("require cannot be used inside a loop")
        record = Require(self._location(), args[0])
        self._pos += 1
        return record

    def _require_env(self, args: list[str]) -> RequireEnv:
        if len(args) not in (1, 2):
            raise self._error("require-env takes a variable name and an optional value")
        if self._open_loops:
            raise self._error("require-env cannot be used inside a loop")
        record = RequireEnv(self._location(), args[0], args[1] if len(args) == 2 else None)
        self._pos += 1
        return record

    def _loop(self, args: list[str]) -> None:
        if len(args) != 3:
            raise self._error("expected 'loop NAME START END'")
        try:
            start, end = int(args[1]), int(args[2])
        except ValueError:
            raise self._error("loop bounds must be integers") from None
        self._open_loop((args[0],), tuple((str(i),) for i in range(start, end)))

    def _foreach(self, args: list[str]) -> None:
        if len(args) < 2:
            raise self._error("expected 'foreach NAME VALUE...'")
        names = tuple(args[0].split(","))
        iterations = []
        for value in args[1:]:
            if value.startswith("<") and value.endswith(">"):
                raise _unsupported(f"foreach group {value}", self._location())
            parts = tuple(value.split(","))
            if len(parts) != len(names):
                raise self._error(f"foreach value {value!r} does not match the names {args[0]!r}")
            iterations.append(parts)
        self._open_loop(names, tuple(iterations))

    def _open_loop(self, names: tuple[str, ...], iterations: tuple[tuple[str, ...], ...]) -> None:
        self._open_loops.append((self._location(), names, iterations))
        self._blocks.append([])
        self._pos += 1

    def _endloop(self, args: list[str]) -> Loop:
        if args:
            raise self._error("endloop takes no arguments")
        if not self._open_loops:
            raise self._error("endloop without loop")
        location, names, iterations = self._open_loops.pop()
        body = tuple(self._blocks.pop())
        self._pos += 1
        return Loop(location, names, iterations, body)

    def _halt(self, args: list[str]) -> None:
        if self._open_loops:
            raise self._error("halt inside a loop is not supported")
        self._halted = True

    def _mode(self, args: list[str]) -> None:
        if args == ["skip"]:
            self._skip_level += 1
        elif args == ["unskip"]:
            if not self._skip_level:
                raise self._error("mode unskip without mode skip")
            self._skip_level -= 1
        else:
            raise _unsupported(" ".join(["mode", *args]), self._location())
        self._pos += 1

    _HANDLERS: Mapping[str, Callable[[_Parser, list[str]], Record | None]] = {
        "statement": _statement,
        "query": _query,
        "require": _require,
        "require-env": _require_env,
        "loop": _loop,
        "foreach": _foreach,
        "endloop": _endloop,
        "halt": _halt,
    }


def parse(text: str, path: str = "<string>") -> tuple[Record, ...]:
    """Parse sqllogictest text into records; ``path`` is only used in messages.

    Parsing happens before anything runs, so an unsupported directive anywhere
    (outside ``mode skip`` and after ``halt`` excepted) fails the file up front.
    """
    return _Parser(text, path).parse()

"""SQL type names a function may declare, and the Arrow type each travels as on the wire.

A function's parameters and result columns are declared with DuckDB type strings, because the
binding hands those same strings to DuckDB. Besides the scalar names in :data:`SCALAR_TYPES`,
three nested forms are carried:

* ``T[N]``: a fixed-size array (Arrow ``fixed_size_list``), e.g. ``FLOAT[1280]``;
* ``T[]``: a list (Arrow ``list``), e.g. ``VARCHAR[]``;
* ``STRUCT(name T, ...)``: a struct (Arrow ``struct``) of any carried types.

Anything else is rejected with :class:`UnsupportedType` when a function is registered, so a
catalog never advertises a type the wire or the binding cannot carry.
"""

from __future__ import annotations

import functools
import re

import pyarrow as pa

from vgi_vision.errors import VgiVisionError

#: Scalar SQL type names, and the Arrow type each travels as.
SCALAR_TYPES: dict[str, pa.DataType] = {
    "BLOB": pa.binary(),
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UBIGINT": pa.uint64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),  # UTC, naive: DuckDB needs pytz for TIMESTAMPTZ values
}

#: Longest fixed-size array a function may declare (a vector, not a payload).
MAX_ARRAY_SIZE = 65536

_TOKEN = re.compile(r'\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|"(?P<quoted>(?:[^"]|"")+)"'
                    r'|(?P<number>[0-9]+)|(?P<punct>[\[\](),]))')


class UnsupportedType(VgiVisionError, ValueError):
    """A declared SQL type that the wire protocol or the binding cannot carry."""


@functools.cache
def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type a declared SQL type travels as; :class:`UnsupportedType` otherwise."""
    parser = _Parser(sql_type)
    result = parser.type()
    parser.expect_end()
    return result


class _Parser:
    """Recursive descent over one type string: ``base ([N] | [])*``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while text[position:].strip():
            match = _TOKEN.match(text, position)
            if match is None:
                raise self.error(f"unexpected {text[position:].strip()[:1]!r}")
            kind = match.lastgroup or ""
            value = match.group(kind)
            self.tokens.append((kind, value.replace('""', '"') if kind == "quoted" else value))
            position = match.end()
        self.position = 0

    def error(self, why: str) -> UnsupportedType:
        carried = ", ".join(SCALAR_TYPES)
        return UnsupportedType(f"unsupported SQL type {self.text!r}: {why}; carried types are "
                               f"{carried}, T[N], T[] and STRUCT(name T, ...)")

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", "")

    def take(self, *values: str) -> str:
        kind, value = self.peek()
        if values and value not in values:
            raise self.error(f"expected {' or '.join(values)}, got {value or 'the end'!r}")
        self.position += 1
        return value

    def expect_end(self) -> None:
        if self.peek()[0] != "end":
            raise self.error(f"unexpected {self.peek()[1]!r}")

    def type(self) -> pa.DataType:
        kind, word = self.peek()
        if kind != "word":
            raise self.error(f"expected a type name, got {word or 'the end'!r}")
        self.take()
        name = word.upper()
        result = self.struct() if name == "STRUCT" else SCALAR_TYPES.get(name)
        if result is None:
            raise self.error(f"{word} is not a carried type")
        while self.peek()[1] == "[":
            self.take("[")
            kind, size = self.peek()
            if kind == "number":
                self.take()
                if not 1 <= int(size) <= MAX_ARRAY_SIZE:
                    raise self.error(f"array size must be 1..{MAX_ARRAY_SIZE}")
                result = pa.list_(result, int(size))
            else:
                result = pa.list_(result)
            self.take("]")
        return result

    def struct(self) -> pa.DataType:
        self.take("(")
        fields: list[pa.Field] = []
        while True:
            kind, name = self.peek()
            if kind not in ("word", "quoted"):
                raise self.error(f"expected a field name, got {name or 'the end'!r}")
            self.take()
            if any(f.name == name for f in fields):
                raise self.error(f"duplicate field {name!r}")
            fields.append(pa.field(name, self.type()))
            if self.take(",", ")") == ")":
                return pa.struct(fields)

"""Where ``vgi-vision classify`` writes its table: the format (from ``--format`` or the
``-o`` extension), checks of the output path before anything slow starts, and writers that
take the results a chunk at a time.

Each chunk is written and flushed as soon as it is classified, so an interrupted run keeps
everything finished before the interruption: CSV and JSON lines are complete up to the last
chunk, and a Parquet file gets its footer when the writer closes (on Ctrl-C too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from vgi_vision.cli.options import CliError, MissingPath

FORMATS = ("table", "csv", "json", "parquet")
#: The format an ``-o`` file gets from its extension when ``--format`` is not given.
FORMAT_OF_SUFFIX = {".txt": "table", ".csv": "csv", ".json": "json", ".jsonl": "json",
                    ".ndjson": "json", ".parquet": "parquet"}


def output_format(given: str | None, output: str | None) -> str:
    """The format to write: ``--format`` if given, else the ``-o`` extension's, else a text
    table. A ``--format`` that contradicts a known extension (``--format csv -o x.parquet``)
    is refused: either way one of the two would be wrong about the file."""
    implied = FORMAT_OF_SUFFIX.get(Path(output).suffix.lower()) if output else None
    if given is not None and implied is not None and given != implied:
        raise CliError(f"--format {given} does not match the extension of -o {output} "
                       f"({implied}); drop --format or change the file name")
    fmt = given or implied or "table"
    if fmt == "parquet" and not output:
        raise CliError("--format parquet writes a file: give -o FILE.parquet")
    return fmt


def check_output(output: str | None) -> None:
    """Refuse an ``-o`` the run could not write, before the worker starts."""
    if output is None:
        return
    path = Path(output)
    if path.is_dir():
        raise MissingPath(f"-o {output} is a folder; give a file name in it")
    if not path.parent.is_dir():
        raise MissingPath(f"-o {output}: the folder {path.parent} does not exist")


class ChunkWriter(Protocol):
    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


def open_writer(fmt: str, sink: BinaryIO, path_width: int = 0) -> ChunkWriter:
    """A writer of ``fmt`` into ``sink`` (a binary stream the caller closes).
    ``path_width``: the longest path, so a text table's first column fits every chunk."""
    if fmt == "parquet":
        return ArrowChunks(sink, pq.ParquetWriter)
    if fmt == "csv":
        return ArrowChunks(sink, pa_csv.CSVWriter)
    if fmt == "json":
        return JsonLines(sink)
    return TextTable(sink, path_width)


class ArrowChunks:
    """A pyarrow table writer opened on the first chunk's schema, one ``write_table`` per
    chunk: Parquet (a row group per chunk, the footer on close) and CSV (the header once)."""

    def __init__(self, sink: BinaryIO,
                 open_writer: Callable[[BinaryIO, pa.Schema], pq.ParquetWriter
                                       | pa_csv.CSVWriter]) -> None:
        self.sink = sink
        self.open_writer = open_writer
        self.writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = self.open_writer(self.sink, table.schema)
        self.writer.write_table(table)
        self.sink.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class JsonLines:
    """One JSON object per row."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink

    def write(self, table: pa.Table) -> None:
        self.sink.write("".join(json.dumps(row) + "\n" for row in table.to_pylist()).encode())
        self.sink.flush()

    def close(self) -> None:
        pass


class TextTable:
    """An aligned text table written as it comes: column widths are set by the header and
    the first chunk (the path column by ``path_width``); a later, wider value widens its own
    line only."""

    def __init__(self, sink: BinaryIO, path_width: int) -> None:
        self.sink = sink
        self.path_width = path_width
        self.widths: list[int] | None = None

    def write(self, table: pa.Table) -> None:
        rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
        lines = []
        if self.widths is None:
            header = table.column_names
            self.widths = [max([len(h)] + [len(r[i]) for r in rows]
                               + ([self.path_width] if h == "path" else []))
                           for i, h in enumerate(header)]
            lines += ["  ".join(h.ljust(w) for h, w in zip(header, self.widths, strict=True)),
                      "  ".join("-" * w for w in self.widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, self.widths, strict=True)).rstrip()
                  for r in rows]
        if lines:
            self.sink.write(("\n".join(lines) + "\n").encode())
            self.sink.flush()

    def close(self) -> None:
        pass


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def remove_if_empty(path: str) -> None:
    """An output file a run interrupted before its first chunk wrote nothing to is not left
    behind: an empty ``.parquet`` is not a Parquet file."""
    try:
        if os.path.getsize(path) == 0:
            os.remove(path)
    except OSError:
        pass

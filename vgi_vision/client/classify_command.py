"""``vgi-vision classify``: classify files, folders and globs in batches, with progress.

The images go through a worker like any SQL query does (a private subprocess worker, or
``--location``), so write-back, limits and results are exactly those of the SQL functions.
Files that cannot be read or decoded are counted and listed at the end; they never stop
the run. An ``s3://bucket/prefix/`` argument stands for the images under that prefix
(:mod:`vgi_vision.client.object_images`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from vgi_vision.client.client import Client
from vgi_vision.client.object_images import Source, list_images, read_all
from vgi_vision.protocol import INPUT_ROW
from vgi_vision.worker.objects import is_object_url

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
FORMATS = ("table", "csv", "json", "parquet")
#: Files read and sent per worker call: bounds memory however large the folder.
CHUNK_FILES = 256


def expand(patterns: Iterable[str]) -> tuple[list[Source], list[str]]:
    """Files named by paths, folders (recursively: image suffixes only), globs, and object
    URLs (a prefix like a folder).

    Returns the files in a stable order and the patterns that matched nothing.
    """
    files: list[Source] = []
    unmatched: list[str] = []
    for pattern in patterns:
        if is_object_url(pattern):
            objects = list_images(pattern, IMAGE_SUFFIXES)
            files += objects
            unmatched += [] if objects else [pattern]
            continue
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))] \
            if glob.has_magic(pattern) else [Path(pattern)]
        found = False
        for match in matches:
            if match.is_dir():
                inside = sorted(p for p in match.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                files += inside
                found = found or bool(inside)
            elif match.exists() or not glob.has_magic(pattern):
                files.append(match)
                found = True
        if not found:
            unmatched.append(pattern)
    return list(dict.fromkeys(files)), unmatched


@dataclass
class BatchResult:
    table: pa.Table
    failed: list[Source] = field(default_factory=list)


def classify_files(client: Client, files: Sequence[Source], top_k: int, progress: bool,
                   send_bytes: bool = False) -> BatchResult:
    """Classify ``files`` through the worker, a chunk at a time, noting which ones failed.

    ``send_bytes`` reads the files here and sends their contents (for a worker on another
    machine); otherwise the worker reads the paths itself and stores them with the results.
    """
    from tqdm import tqdm

    tables: list[pa.Table] = []
    failed: list[Source] = []
    with tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for start in range(0, len(files), CHUNK_FILES):
            chunk = files[start:start + CHUNK_FILES]
            images = pa.array(read_all(chunk), pa.binary()) if send_bytes \
                else pa.array([str(f) for f in chunk], pa.string())
            table = client.table("classify", images, pa.array([top_k] * len(chunk), pa.int32()))
            rows = table.column(INPUT_ROW).to_pylist()
            classified = set(rows)
            failed += [f for i, f in enumerate(chunk) if i not in classified]
            tables.append(table.drop_columns([INPUT_ROW]).add_column(
                0, "path", pa.array([str(chunk[i]) for i in rows], pa.string())))
            bar.update(len(chunk))
    return BatchResult(pa.concat_tables(tables) if tables else pa.table({}), failed)


def write_table(table: pa.Table, fmt: str, out: TextIO, output: str | None) -> None:
    if fmt == "parquet":
        if not output:
            raise ValueError("--format parquet needs --output FILE")
        pq.write_table(table, output)
        return
    with contextlib.ExitStack() as stack:
        stream = stack.enter_context(open(output, "w", encoding="utf-8", newline="")) \
            if output else out
        if fmt == "csv":
            buffer = pa.BufferOutputStream()
            pa_csv.write_csv(table, buffer)
            stream.write(buffer.getvalue().to_pybytes().decode())
        elif fmt == "json":
            for row in table.to_pylist():
                stream.write(json.dumps(row) + "\n")
        else:
            stream.write(render_text_table(table))


def render_text_table(table: pa.Table) -> str:
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    header = table.column_names
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def progress_wanted(stream: TextIO = sys.stderr) -> bool:
    """Progress bars only for a person at a terminal, never in pipes or CI logs."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def distinct_report(files: Sequence[Source], failed: list[Source]) -> str:
    """``N files, M distinct images``: copies of one file under other names are one stored
    image (its key is its content), so the two counts differ by the copies. Hashing reads the
    classified files once more, which costs little beside classifying them."""
    unread = set(failed)
    classified = [f for f in files if f not in unread]
    keys = {hashlib.sha256(data).hexdigest() for data in read_all(classified)
            if data is not None}
    return f"{len(classified)} files, {len(keys)} distinct images"


def failure_report(failed: list[Source], unmatched: list[str]) -> Iterator[str]:
    if unmatched:
        yield f"{len(unmatched)} pattern(s) matched no file: " + ", ".join(unmatched)
    if failed:
        yield f"{len(failed)} file(s) could not be read or decoded:"
        yield from (f"  {f}" for f in failed)

"""``vgi-vision classify``: classify files, folders and globs in chunks, with progress.

The images go through a worker like any SQL query does (a private subprocess worker, or
``--location``), so write-back, limits and results are exactly those of the SQL functions.
Results come out a chunk at a time, for the caller to write before the next one is sent.
Files that cannot be read or decoded are counted and listed at the end; they never stop
the run. An ``s3://bucket/prefix/`` argument stands for the images under that prefix
(:mod:`vgi_vision.client.object_images`).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.compute as pc

from vgi_vision.client.client import Client
from vgi_vision.client.object_images import Source, list_images, read_all, read_or_none
from vgi_vision.objects import is_object_url
from vgi_vision.protocol import INPUT_ROW

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
#: Files read and sent per worker call by default: bounds memory however large the folder,
#: and is what an interrupted run loses at most.
CHUNK_FILES = 256


def expand(patterns: Iterable[str]) -> tuple[list[Source], list[str]]:
    """Files named by paths, folders (recursively: image suffixes only), globs, and object
    URLs (a prefix like a folder).

    Returns the files in a stable order and the patterns that matched nothing: a path that
    does not exist, a glob that matches no file, a folder holding no image.
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
            elif match.exists():
                files.append(match)
                found = True
        if not found:
            unmatched.append(pattern)
    return list(dict.fromkeys(files)), unmatched


def unmatched_reason(pattern: str) -> str:
    """Why ``pattern`` (from :func:`expand`'s unmatched) gave no file, in a few words."""
    if is_object_url(pattern):
        return f"{pattern} matched no file: no image object under it"
    if Path(pattern).is_dir():
        return f"{pattern} holds no image file ({' '.join(sorted(IMAGE_SUFFIXES))})"
    if glob.has_magic(pattern):
        return f"{pattern} matches no file"
    return f"{pattern} does not exist"


def content_key(source: Source) -> str | None:
    """The sha256 of a file's or object's bytes, as the store keys images; None if it cannot
    be read."""
    if isinstance(source, str) and is_object_url(source):
        data = read_or_none(source)
        return None if data is None else hashlib.sha256(data).hexdigest()
    try:
        with Path(source).open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class ContentKeys(dict[Source, str | None]):
    """Each file's content key, hashed once however many times it is asked for."""

    def __missing__(self, path: Source) -> str | None:
        key = self[path] = content_key(path)
        return key


@dataclass
class Chunk:
    """One chunk's results: the rows (``path`` first), and its files that gave none."""

    files: list[Source]
    table: pa.Table
    failed: list[Source]


@dataclass
class Tally:
    """What a run did, for the closing summary line."""

    started: float = field(default_factory=time.monotonic)
    ready: float | None = None  # when the worker answered: images/s counts from here
    files: int = 0
    images: set[str] = field(default_factory=set)  # content keys of the classified files
    failed: list[Source] = field(default_factory=list)
    skipped: int = 0

    def add(self, chunk: Chunk, keys: ContentKeys) -> None:
        self.files += len(chunk.files)
        self.failed += chunk.failed
        failed = set(chunk.failed)
        self.images.update(k for f in chunk.files if f not in failed
                           and (k := keys[f]) is not None)

    def summary(self) -> str:
        now = time.monotonic()
        working = now - (self.ready if self.ready is not None else self.started)
        rate = self.files / working if working > 0 else 0.0
        skipped = f", {self.skipped} skipped (already stored)" if self.skipped else ""
        return (f"{self.files} files, {len(self.images)} distinct images, "
                f"{len(self.failed)} unreadable{skipped} in {now - self.started:.1f} s "
                f"({rate:.1f} images/s)")


def classify_chunks(client: Client, files: Sequence[Source], top_k: int, keys: ContentKeys,
                    chunk_files: int = CHUNK_FILES, progress: bool = False,
                    send_bytes: bool = False, job: str | None = None) -> Iterator[Chunk]:
    """Classify ``files`` through the worker, a chunk at a time, noting which ones failed.

    ``send_bytes`` reads the files here and sends their contents (for a worker on another
    machine); otherwise the worker reads the paths itself and stores them with the results,
    absolute, so the store names the same files whatever folder a later reader (SQL, the
    gallery) runs in. The output shows each path as it was given.
    The progress bar moves with every sub-batch the worker answers, not only per chunk.
    No files make one empty chunk, so the output still gets its header or schema.
    ``job`` names every run of every chunk as one job (see :meth:`Client.scan`).
    """
    from tqdm import tqdm

    with tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for start in range(0, len(files), chunk_files) or [0]:
            chunk = list(files[start:start + chunk_files])
            if send_bytes:
                contents = read_all(chunk)
                for f, data in zip(chunk, contents, strict=True):
                    keys[f] = hashlib.sha256(data).hexdigest() if data is not None else None
                images = pa.array(contents, pa.binary())
            else:
                images = pa.array([f if isinstance(f, str) and is_object_url(f)
                                   else os.path.abspath(f) for f in chunk], pa.string())
            batches, done = [], 0
            # A file listed but gone by now (moved, deleted) is one more unreadable file:
            # 'null' keeps it from failing the chunk; missing inputs were refused up front.
            for batch in client.scan("classify", images,
                                     pa.array([top_k] * len(chunk), pa.int32()),
                                     pa.array(["null"] * len(chunk), pa.string()), job=job):
                batches.append(batch)
                reached = pc.max(batch.column(INPUT_ROW)).as_py() + 1
                bar.update(max(0, reached - done))
                done = max(done, reached)
            bar.update(len(chunk) - done)
            table = pa.Table.from_batches(batches) if batches \
                else client.wire_schema("classify").empty_table()
            rows = table.column(INPUT_ROW).to_pylist()
            classified = set(rows)
            yield Chunk(chunk, table.drop_columns([INPUT_ROW]).add_column(
                0, "path", pa.array([str(chunk[i]) for i in rows], pa.string())),
                [f for i, f in enumerate(chunk) if i not in classified])


def stored_keys(uri: str, model: str, top_k: int) -> set[str]:
    """Content keys of the images the store at ``uri`` holds for ``model`` with at least
    ``top_k`` classes: classifying them again would store nothing new. Read a batch at a
    time, keys only."""
    from vgi_vision.store import StoreReader

    async def read() -> set[str]:
        reader = await StoreReader.open(uri)
        if reader is None:
            return set()
        keys: set[str] = set()
        try:
            images = await reader.at(await reader.version())
            try:
                async for batch in images.batches({n: n for n in ("image_key", "model",
                                                                 "top_k")}):
                    wanted = pc.and_(pc.equal(batch["model"], model),
                                     pc.greater_equal(batch["top_k"], top_k))
                    keys.update(batch.filter(wanted)["image_key"].to_pylist())
            finally:
                images.close()
        finally:
            reader.close()
        return keys

    return asyncio.run(read())


def not_stored(files: Sequence[Source], keys: ContentKeys, stored: set[str]) -> list[Source]:
    """The files whose content is not among ``stored`` (unreadable ones stay: they are
    reported as such)."""
    return [f for f in files if keys[f] not in stored]


def progress_wanted(stream: TextIO = sys.stderr) -> bool:
    """Progress bars only for a person at a terminal, never in pipes or CI logs."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def failure_report(failed: list[Source]) -> Iterator[str]:
    if failed:
        yield f"{len(failed)} file(s) could not be read or decoded:"
        yield from (f"  {f}" for f in failed)

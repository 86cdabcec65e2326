"""Which files a path argument may read.

A worker reachable over a socket or HTTP must not become a way to read any file its user can:
there, path arguments resolve under a configured data root and anything that escapes it
(``..``, absolute paths elsewhere, symlinks pointing out) is refused. A subprocess worker runs
as the calling user and reads what that user could read anyway.

A path that names no file, or a folder, is a :class:`MissingImage` error naming the path (with
what to use instead when it looks like a glob or a URL), never a silent NULL: a typo must not
look like a bad image. The functions' ``missing := 'null'`` argument turns it into NULL / no
rows, decided in :meth:`PathPolicy.source` where the reader's ``FileNotFoundError`` arrives,
so every reader (a file, or another store that raises the same error) follows one policy.

Object URLs (``s3://...``) follow the same rules through :mod:`vgi_vision.objects`: a
data root may be a URL prefix, and a missing object is a missing file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vgi_vision.objects import ObjectPrefixes, fetch_all, is_object_url
from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.registry import FunctionError
from vgi_vision.worker.vision.imaging import read_regular_file

#: The values of the ``missing`` argument: fail the call, or give what an unreadable image gives.
MISSING_ERROR, MISSING_NULL = "error", "null"
MISSING_CHOICES = (MISSING_ERROR, MISSING_NULL)
GLOB_CHARACTERS = frozenset("*?[")
URL_SCHEMES = ("http://", "https://")


class MissingImage(FunctionError):
    """A path argument names no file (or a folder). ``missing := 'null'`` makes it NULL."""

    def __init__(self, path: str, folder: bool) -> None:
        super().__init__(f"path {path!r} {what_is_wrong(path, folder)}; missing := 'null' "
                         f"gives NULL / no rows instead", kind=ErrorKind.INVALID_ARGUMENT)


def what_is_wrong(path: str, folder: bool) -> str:
    """Why ``path`` names no image file, and what to write instead for a URL, a glob or a
    folder (DuckDB's ``read_blob`` reads globs, and URLs with the httpfs extension)."""
    if path.lower().startswith(URL_SCHEMES):
        return (f"is a URL, and paths are files: with DuckDB's httpfs extension pass the "
                f"bytes, SELECT * FROM read_blob('{path}') f, vision.classify(f.content)")
    if folder or GLOB_CHARACTERS & set(path):
        pattern = path.rstrip("/") + "/*.jpg" if folder else path
        return (f"{'is a folder' if folder else 'does not exist'} (a path names one file): "
                f"for many files pass the bytes, "
                f"SELECT * FROM read_blob('{pattern}') f, vision.classify(f.content)")
    return "does not exist"


def checked_missing(value: str | None) -> str:
    """A ``missing`` argument, refused unless it is one of :data:`MISSING_CHOICES`."""
    if value not in MISSING_CHOICES:
        raise FunctionError(f"missing must be 'error' or 'null', got {value!r}",
                            kind=ErrorKind.INVALID_ARGUMENT)
    return value


@dataclass(frozen=True)
class PathPolicy:
    root: Path | None = None
    allow_any: bool = False
    objects: ObjectPrefixes = ObjectPrefixes()

    @classmethod
    def unrestricted(cls) -> PathPolicy:
        return cls(allow_any=True, objects=ObjectPrefixes(allow_any=True))

    @classmethod
    def confined(cls, roots: str | os.PathLike | Sequence[str] | None) -> PathPolicy:
        """Confined to data roots: at most one local folder, and any object URL prefixes."""
        given = [] if roots is None else \
            [os.fspath(roots)] if isinstance(roots, (str, os.PathLike)) else list(roots)
        local = [r for r in given if not is_object_url(r)]
        if len(local) > 1:
            raise ValueError(f"at most one local data root, got {local}")
        return cls(root=Path(local[0]).resolve() if local else None,
                    objects=ObjectPrefixes.of(given))

    def resolve(self, path: str) -> str:
        """The real path to read for ``path``, or a ``path_refused`` error."""
        if "\x00" in path:
            raise FunctionError("path contains a NUL byte", kind=ErrorKind.PATH_REFUSED)
        if self.allow_any:
            return path
        if self.root is None and self.objects.prefixes:
            raise FunctionError(f"path {path!r} is outside the data roots (object URLs only)",
                                kind=ErrorKind.PATH_REFUSED)
        if self.root is None:
            raise FunctionError("path arguments are disabled on this worker; start it with "
                                "--data-root DIR or pass the image bytes (BLOB)",
                                kind=ErrorKind.PATH_REFUSED)
        candidate = Path(path)
        try:
            real = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
            if real.is_symlink():  # Python 3.13+ returns a symlink loop unresolved
                raise RuntimeError("symlink loop")
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (before Python 3.13)
            raise FunctionError(f"path {path!r} cannot be resolved", kind=ErrorKind.PATH_REFUSED) \
                from None
        if not self.contains(real):
            raise FunctionError(f"path {path!r} is outside the data root",
                                kind=ErrorKind.PATH_REFUSED)
        return str(real)

    def contains(self, real: Path) -> bool:
        return self.root is not None and (real == self.root or self.root in real.parents)

    def sources(self, paths: Sequence[str | None], max_bytes: int,
                missing: Sequence[str]) -> list[str | bytes | None]:
        """``source`` of each path (None stays None) under its row's ``missing`` choice;
        object URLs are fetched in parallel."""
        return fetch_all(lambda row: None if row[0] is None
                         else self.source(row[0], max_bytes, row[1]),
                         list(zip(paths, missing, strict=True)),
                         parallel=any(p is not None and is_object_url(p) for p in paths))

    def source(self, path: str, max_bytes: int, missing: str = MISSING_ERROR
               ) -> str | bytes | None:
        """What to decode for ``path``: the path itself when any file may be read; under a
        data root, the file's bytes, read through a descriptor whose target is checked again
        after opening, so a symlink swapped in after ``resolve`` cannot lead outside. An
        object URL is fetched (see :class:`ObjectPrefixes`).

        A path naming no file or a folder, or a missing object, raises :class:`MissingImage`,
        or gives None with ``missing='null'``; a file that exists but cannot be read gives
        None."""
        url = is_object_url(path)
        real = path if url else self.resolve(path)
        try:
            if url:
                return self.objects.read(path, max_bytes)
            if self.allow_any:
                if stat.S_ISDIR(os.stat(real).st_mode):  # the decoder reads it later
                    raise IsADirectoryError(real)
                return real
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            return self.missing(path, isinstance(exc, IsADirectoryError), missing)
        except OSError:
            return None
        try:
            if not self.contains(opened_path(fd, real)):
                raise FunctionError(f"path {path!r} is outside the data root",
                                    kind=ErrorKind.PATH_REFUSED)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                return self.missing(path, True, missing)
            return read_regular_file(fd, max_bytes)
        finally:
            os.close(fd)

    @staticmethod
    def missing(path: str, folder: bool, missing: str) -> None:
        """The one place a path naming no image file is decided: an error unless the call
        asked for ``missing := 'null'``."""
        if missing == MISSING_NULL:
            return None
        raise MissingImage(path, folder)


def opened_path(fd: int, fallback: str) -> Path:
    """The file a descriptor really refers to (Linux ``/proc``), else the path it was opened by."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(fallback)

"""Which files a path argument may read.

A worker reachable over a socket or HTTP must not become a way to read any file its user can:
there, path arguments resolve under a configured data root and anything that escapes it
(``..``, absolute paths elsewhere, symlinks pointing out) is refused. A subprocess worker runs
as the calling user and reads what that user could read anyway.

Object URLs (``s3://...``) follow the same rules through :mod:`vgi_vision.worker.objects`: a
data root may be a URL prefix, and a missing object is a missing file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.objects import ObjectPrefixes, fetch_all, is_object_url
from vgi_vision.worker.registry import FunctionError
from vgi_vision.worker.vision.imaging import read_regular_file


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

    def sources(self, paths: Sequence[str | None], max_bytes: int) -> list[str | bytes | None]:
        """``source`` of each path (None stays None); object URLs are fetched in parallel."""
        return fetch_all(lambda p: None if p is None else self.source(p, max_bytes), paths,
                         parallel=any(p is not None and is_object_url(p) for p in paths))

    def source(self, path: str, max_bytes: int) -> str | bytes | None:
        """What to decode for ``path``: the path itself when any file may be read; under a
        data root, the file's bytes, read through a descriptor whose target is checked again
        after opening, so a symlink swapped in after ``resolve`` cannot lead outside.
        An object URL is fetched (see :class:`ObjectPrefixes`); a missing object is
        handled exactly as a missing file."""
        url = is_object_url(path)
        real = path if url else self.resolve(path)
        if self.allow_any and not url:
            return real
        try:
            if url:
                return self.objects.read(path, max_bytes)
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not self.contains(opened_path(fd, real)):
                raise FunctionError(f"path {path!r} is outside the data root",
                                    kind=ErrorKind.PATH_REFUSED)
            return read_regular_file(fd, max_bytes)
        finally:
            os.close(fd)


def opened_path(fd: int, fallback: str) -> Path:
    """The file a descriptor really refers to (Linux ``/proc``), else the path it was opened by."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(fallback)

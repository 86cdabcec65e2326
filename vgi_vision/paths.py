"""Which files a path argument may read.

A worker reachable over a socket or HTTP must not become a way to read any file its user can:
there, path arguments resolve under a configured data root and anything that escapes it
(``..``, absolute paths elsewhere, symlinks pointing out) is refused. A subprocess worker runs
as the calling user and reads what that user could read anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vgi_vision.registry import FunctionError


@dataclass(frozen=True)
class PathPolicy:
    root: Path | None = None
    allow_any: bool = False

    @classmethod
    def unrestricted(cls) -> "PathPolicy":
        return cls(allow_any=True)

    @classmethod
    def confined(cls, root: str | os.PathLike | None) -> "PathPolicy":
        return cls(root=Path(root).resolve() if root is not None else None)

    def resolve(self, path: str) -> str:
        """The real path to read for ``path``, or a ``path_refused`` error."""
        if "\x00" in path:
            raise FunctionError("path contains a NUL byte", kind="path_refused")
        if self.allow_any:
            return path
        if self.root is None:
            raise FunctionError("path arguments are disabled on this worker; start it with "
                                "--data-root DIR or pass the image bytes (BLOB)",
                                kind="path_refused")
        candidate = Path(path)
        real = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if real != self.root and self.root not in real.parents:
            raise FunctionError(f"path {path!r} is outside the data root", kind="path_refused")
        return str(real)

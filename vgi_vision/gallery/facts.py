"""What the gallery may say about an image's file: its path and its header and EXIF facts.

The same rule as a worker's ``--data-root``: with a data root, a stored path is shown (relative
to the root) and its file read only if it resolves inside the root; without one, paths are
shown as stored and no file is ever read. Stored paths are data from SQL rows, as untrusted as
image bytes: reading is through :class:`vgi_vision.worker.paths.PathPolicy`, and a file that is
missing, refused or undecodable simply has no facts. The data root may be an object URL
prefix (``s3://bucket/photos/``): stored URLs under it are shown whole and read from storage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from vgi_vision.objects import ObjectStoreError, is_object_url
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import FunctionError
from vgi_vision.worker.vision.facts import read_info

#: Largest file read for its facts.
MAX_FILE_BYTES = 64 << 20


class FilePolicy:
    """The data-root rule for shown paths and file reads (no root: show, never read)."""

    def __init__(self, data_root: str | None) -> None:
        self.root = Path(data_root).resolve() \
            if data_root is not None and not is_object_url(data_root) else None
        self._paths = PathPolicy.confined(data_root) if data_root else None

    def shown_path(self, path: str | None) -> str | None:
        """``path`` as the page may show it, or None."""
        if path is None or self._paths is None:
            return path
        try:
            if is_object_url(path):
                return self._paths.objects.check(path).prefix
            real = Path(self._paths.resolve(path))
        except (FunctionError, ObjectStoreError):
            return None
        return str(real.relative_to(self.root)) if self.root else None

    def facts(self, path: str | None) -> list[tuple[str, str]]:
        """Format, size and EXIF facts of the file at ``path``, when it may be read."""
        data = self.read(path)
        return [] if data is None else image_facts(data)

    def read(self, path: str | None) -> bytes | None:
        """The bytes of the file at ``path`` when it may be read (under the data root)."""
        if path is None or self._paths is None:
            return None
        try:
            data = self._paths.source(path, MAX_FILE_BYTES)
        except (FunctionError, ObjectStoreError):
            return None
        return data if isinstance(data, bytes) else None

    def original(self, path: str | None, image_key: str) -> tuple[bytes, str] | None:
        """The stored image's own file, full size, with its media type: only when it may be
        read and still holds exactly the bytes that were classified (its sha256 is the image
        key), so a file changed or replaced since is never shown as this image."""
        data = self.read(path)
        if data is None or hashlib.sha256(data).hexdigest() != image_key:
            return None
        info = read_info(data)
        media_type = Image.MIME.get(info.format or "") if info is not None else None
        return (data, media_type) if media_type else None


def image_facts(data: bytes) -> list[tuple[str, str]]:
    """(name, value) facts of encoded image bytes, from the same header and EXIF reading as
    SQL's ``image_info()``; empty if the bytes are not an image."""
    info = read_info(data)
    if info is None:
        return []
    camera = " ".join(part for part in (info.make, info.model) if part)
    facts = [
        ("format", info.format),
        ("size", f"{info.width} x {info.height} px" if info.width and info.height else None),
        ("mode", info.mode),
        ("frames", str(info.frames) if info.frames and info.frames > 1 else None),
        ("orientation", str(info.orientation) if info.orientation else None),
        ("taken", info.taken_at.isoformat(" ") if info.taken_at else None),
        ("camera", camera or None),
        ("position", f"{info.latitude:.5f}, {info.longitude:.5f}"
         if info.latitude is not None and info.longitude is not None else None),
    ]
    return [(name, value) for name, value in facts if value]

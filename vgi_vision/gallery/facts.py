"""What the gallery may say about an image's file: its path and its EXIF facts.

The same rule as a worker's ``--data-root``: with a data root, a stored path is shown (relative
to the root) and its file read only if it resolves inside the root; without one, paths are
shown as stored and no file is ever read. Stored paths are data from SQL rows, as untrusted as
image bytes: reading is through :class:`vgi_vision.paths.PathPolicy`, and a file that is
missing, refused or undecodable simply has no facts.
"""

from __future__ import annotations

import io
import warnings
from fractions import Fraction
from pathlib import Path

from PIL import ExifTags, Image

from vgi_vision.paths import PathPolicy
from vgi_vision.registry import FunctionError

#: Largest file read for its EXIF facts.
MAX_FILE_BYTES = 64 << 20
#: EXIF tags worth showing a reviewer, in display order.
SHOWN_TAGS = ("Make", "Model", "LensModel", "DateTimeOriginal", "DateTime", "ExposureTime",
              "FNumber", "ISOSpeedRatings", "FocalLength", "Orientation", "Software")
MAX_VALUE_CHARS = 200


class FilePolicy:
    def __init__(self, data_root: str | None) -> None:
        self.root = Path(data_root).resolve() if data_root else None
        self._paths = PathPolicy.confined(self.root) if self.root else None

    def shown_path(self, path: str | None) -> str | None:
        """``path`` as the page may show it, or None."""
        if path is None or self.root is None or self._paths is None:
            return path
        try:
            real = Path(self._paths.resolve(path))
        except FunctionError:
            return None
        return str(real.relative_to(self.root))

    def facts(self, path: str | None) -> list[tuple[str, str]]:
        """Format, size and EXIF facts of the file at ``path``, when it may be read."""
        if path is None or self._paths is None:
            return []
        try:
            data = self._paths.source(path, MAX_FILE_BYTES)
        except FunctionError:
            return []
        if not isinstance(data, bytes):
            return []
        return image_facts(data)


def image_facts(data: bytes) -> list[tuple[str, str]]:
    """(name, value) facts of encoded image bytes; empty if Pillow cannot parse them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                facts = [("format", str(image.format)),
                         ("size", f"{image.width} x {image.height} px")]
                exif = image.getexif()
                tags = {ExifTags.TAGS.get(tag, str(tag)): value
                        for tag, value in {**exif, **exif.get_ifd(ExifTags.IFD.Exif)}.items()}
    except Exception:  # noqa: BLE001 - hostile files raise anything; no facts then
        return []
    for name in SHOWN_TAGS:
        if name in tags:
            facts.append((name, readable(tags[name])))
    return facts


def readable(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, float | Fraction) or type(value).__name__ == "IFDRational":
        number = float(value)  # type: ignore[arg-type]
        value = f"1/{round(1 / number)}" if 0 < number < 0.5 else f"{number:g}"
    return str(value).strip("\x00 ")[:MAX_VALUE_CHARS]

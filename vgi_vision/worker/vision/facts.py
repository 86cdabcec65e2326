"""Facts about an image that need no model: header fields, EXIF and a perceptual hash.

Like decoding, everything here is total on untrusted input: bytes that are not an image give
``None``, and a malformed EXIF field gives ``None`` for that field only. :func:`read_info`
parses headers and never decodes pixels; :func:`perceptual_hash` decodes (under the same
pixel limit as the model input) because a hash of what the picture shows needs the pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image

from vgi_vision.worker.vision.budget import DecodeLimits, open_image
from vgi_vision.worker.vision.imaging import ImageSource, load_rgb, read_untrusted

#: Longest EXIF text (camera make or model) returned; longer values are cut.
MAX_TEXT = 256

#: The side imagehash's pHash resamples to (hash_size 8 x highfreq_factor 4): decoding a JPEG
#: at a 1/8 draft scale still leaves at least this many pixels on the shorter side.
PHASH_SIDE = 32


@dataclass(frozen=True)
class ImageInfo:
    """What an image's headers say. Field names are the SQL struct's field names."""

    format: str | None
    width: int | None
    height: int | None
    mode: str | None
    frames: int | None
    orientation: int | None = None
    taken_at: datetime | None = None
    make: str | None = None
    model: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_info(source: ImageSource, limits: DecodeLimits = DecodeLimits()) -> ImageInfo | None:
    """Header facts of ``source``, or None when it is not an image Pillow can identify."""
    return read_untrusted(source, limits, _identify)


def _identify(data: bytes) -> ImageInfo:
    with open_image(data) as image:
        return _info(image)


def _info(image: Image.Image) -> ImageInfo:
    width, height = (_int32(side) for side in image.size)
    # The base method reads the EXIF found while parsing headers; PNG's override would decode
    # the whole image looking for an eXIf chunk after the pixel data.
    exif = _field(lambda: Image.Image.getexif(image))
    if exif is None:
        exif = Image.Exif()
    exif_ifd = _field(lambda: exif.get_ifd(ExifTags.IFD.Exif)) or {}
    gps = _field(lambda: exif.get_ifd(ExifTags.IFD.GPSInfo)) or {}
    return ImageInfo(
        format=image.format,
        width=width,
        height=height,
        mode=image.mode,
        frames=_field(lambda: _int32(getattr(image, "n_frames", 1))),
        orientation=_field(lambda: _orientation(exif.get(ExifTags.Base.Orientation))),
        taken_at=_field(lambda: _timestamp(exif_ifd.get(ExifTags.Base.DateTimeOriginal)
                                           or exif.get(ExifTags.Base.DateTime))),
        make=_field(lambda: _text(exif.get(ExifTags.Base.Make))),
        model=_field(lambda: _text(exif.get(ExifTags.Base.Model))),
        latitude=_field(lambda: _coordinate(gps, ExifTags.GPS.GPSLatitude,
                                            ExifTags.GPS.GPSLatitudeRef, "S", 90.0)),
        longitude=_field(lambda: _coordinate(gps, ExifTags.GPS.GPSLongitude,
                                             ExifTags.GPS.GPSLongitudeRef, "W", 180.0)),
    )


def _field(read: Any) -> Any:
    """One field's value, None when reading it fails: a bad tag costs only that tag."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - EXIF from the wild is anything
        return None


def _int32(value: Any) -> int | None:
    """A count or size as SQL INTEGER; None when a header claims more than fits."""
    fits = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
    return value if fits else None


def _orientation(value: Any) -> int | None:
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _timestamp(value: Any) -> datetime | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" (camera local time, no zone); None if absent or invalid."""
    text = _text(value)
    return None if text is None else datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    # lone surrogates (undecodable bytes Pillow kept) cannot travel as UTF-8
    text = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "").strip()
    return text[:MAX_TEXT] or None


def _coordinate(gps: Any, value_tag: int, ref_tag: int, negative: str, bound: float
                ) -> float | None:
    """Degrees from EXIF's (degrees, minutes, seconds) rationals; None if out of range."""
    parts = gps.get(value_tag)
    if parts is None or len(parts) != 3:
        return None
    degrees = sum(float(part) / scale for part, scale in zip(parts, (1, 60, 3600), strict=True))
    if _text(gps.get(ref_tag)) == negative:
        degrees = -degrees
    return degrees if math.isfinite(degrees) and abs(degrees) <= bound else None


def perceptual_hash(source: ImageSource, limits: DecodeLimits = DecodeLimits()) -> int | None:
    """The 64-bit DCT perceptual hash (imagehash's ``phash``) of the upright image, or None.

    Near-identical pictures (re-encoded, resized, slightly cropped) differ in few bits, so
    ``bit_count(xor(a, b))`` is a similarity measure. Transparency is composited onto white
    and EXIF orientation applied first, exactly as for the model input.
    """
    import imagehash  # scipy and PyWavelets come with it: loaded by the first hash only

    def hash_of(data: bytes) -> int | None:
        rgb = load_rgb(data, limits, PHASH_SIDE)
        return None if rgb is None else int(str(imagehash.phash(rgb)), 16)

    return read_untrusted(source, limits, hash_of)

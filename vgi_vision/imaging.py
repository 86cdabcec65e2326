"""Turning untrusted image bytes or paths into model-ready pixels.

Everything here is total on hostile input: any image that cannot be decoded safely becomes
``None`` ("no prediction") instead of an exception, because one bad row in a table must never
fail a whole query. Limits are checked from the header *before* pixels are decoded, so a
decompression bomb costs a header parse, not gigabytes of memory.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

log = logging.getLogger(__name__)

#: What callers may hand to the decoder: raw bytes, a file path, or nothing (SQL NULL).
ImageSource = bytes | bytearray | memoryview | str | os.PathLike | None

# Pillow's own bomb check only warns below twice its limit; ours is explicit (DecodeLimits),
# so Pillow's is switched off to keep one rule in one place.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep one hostile image from exhausting the worker."""

    max_pixels: int = 64_000_000
    max_bytes: int = 64 * 1024 * 1024


#: Longest side of the stored thumbnails: enough for a gallery tile or a detail view.
THUMBNAIL_SIDE = 256
#: JPEG quality of thumbnails: ~7 KB for a 256 px photo, with no visible blocking at that size.
THUMBNAIL_QUALITY = 75


@dataclass(frozen=True)
class Decoded:
    """Model-ready pixels, plus a small JPEG of the whole (uncropped) image when asked for."""

    pixels: np.ndarray
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class Preprocessing:
    """How the model expects its input: shorter side resized, then a centered square crop."""

    size: int = 224
    resize_shorter_side: int = 256


def read_source(source: ImageSource, limits: DecodeLimits) -> bytes | None:
    """Return the encoded bytes of ``source``, or None if there is nothing usable to read.

    A path that is missing, not a regular file, unreadable or larger than the byte limit is
    "no image", never an error: paths arrive from SQL rows and are as untrusted as bytes.
    """
    if source is None:
        return None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data if 0 < len(data) <= limits.max_bytes else None
    try:
        fd = os.open(os.fsdecode(source), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        return read_regular_file(fd, limits.max_bytes)
    finally:
        os.close(fd)


def read_regular_file(fd: int, max_bytes: int) -> bytes | None:
    """The contents of the opened file ``fd``, if it is a regular file of at most ``max_bytes``.

    The checks are made on the descriptor, not on a path, so a path swapped for a FIFO or a
    device after any earlier check cannot make the worker block or read without end: the file
    is opened once (non-blocking, so opening a FIFO never waits for a writer) and what was
    opened is what is checked and read, at most ``max_bytes + 1`` bytes (a file still growing
    past the limit is refused).
    """
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError:
        return None
    return data if 0 < len(data) <= max_bytes else None


def decode(source: ImageSource, limits: DecodeLimits = DecodeLimits(),
           prep: Preprocessing = Preprocessing()) -> np.ndarray | None:
    """Decode ``source`` into a ``size x size x 3`` uint8 RGB array, or None."""
    decoded = decode_image(source, limits, prep)
    return None if decoded is None else decoded.pixels


def decode_image(source: ImageSource, limits: DecodeLimits = DecodeLimits(),
                 prep: Preprocessing = Preprocessing(), thumbnail: bool = False
                 ) -> Decoded | None:
    """Decode ``source`` into model pixels and, if ``thumbnail``, a JPEG thumbnail; or None.

    The thumbnail is made from the image already decoded for the model (at JPEG draft scale),
    so it costs a small resize and encode, not a second decode.
    """
    data = read_source(source, limits)
    if data is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _decode_bytes(data, limits, prep, thumbnail)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile input
        log.debug("undecodable image (%d bytes): %s: %s", len(data), type(exc).__name__, exc)
        return None


def _decode_bytes(data: bytes, limits: DecodeLimits, prep: Preprocessing,
                  thumbnail: bool) -> Decoded | None:
    rgb = load_rgb(data, limits, prep.resize_shorter_side)
    if rgb is None:
        return None
    pixels = resize_center_crop(rgb, prep)
    return Decoded(pixels, jpeg_thumbnail(rgb) if thumbnail else None)


def load_rgb(data: bytes, limits: DecodeLimits, shorter_side: int) -> Image.Image | None:
    """The first frame of ``data`` as upright RGB, None if over the pixel limit.

    Raises on undecodable bytes (callers catch). JPEG draft mode lets libjpeg scale by
    1/2..1/8 while decoding, so a 24 MP photo is never materialized at full size when
    ``shorter_side`` pixels are all the caller needs.
    """
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width <= 0 or height <= 0 or width * height > limits.max_pixels:
            return None
        image.seek(0)  # animated formats: the first frame
        scale = max(shorter_side / min(width, height), 1e-9)
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        image.load()
        oriented = ImageOps.exif_transpose(image)
        return to_rgb(oriented)


def jpeg_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE,
                   quality: int = THUMBNAIL_QUALITY) -> bytes:
    """The whole picture, longest side at most ``side``, as a baseline JPEG."""
    width, height = image.size
    scale = min(1.0, side / max(width, height))
    small = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without losing what the picture shows.

    Transparency is composited onto white (dropping alpha would turn transparent pixels into
    whatever colour happens to be stored under them), and 16-bit images are rescaled rather than
    clipped (a plain convert would saturate everything above 255 to white).
    """
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        top = full_scale(image.mode, float(pixels.max(initial=0.0)))
        scaled = np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def full_scale(mode: str, brightest: float) -> float:
    """The stored value that means white, for modes Pillow cannot convert without clipping.

    16-bit modes use 0..65535; 32-bit "I" and float "F" carry no range of their own, so it is
    guessed from the data: floats within 0..1, 8-bit values, or else 16-bit values.
    """
    if mode not in ("I", "F") or brightest > 255:
        return 65535.0
    if mode == "F" and brightest <= 1.0:
        return 1.0
    return 255.0


def resize_center_crop(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resize the shorter side to ``resize_shorter_side`` and take the centered square crop.

    Done as one resample of the source region that the crop covers, which gives the same
    pixels as resize-then-crop for a fraction of the work.
    """
    width, height = image.size
    side = min(width, height) * prep.size / prep.resize_shorter_side
    left = (width - side) / 2
    top = (height - side) / 2
    box = (left, top, left + side, top + side)
    resized = image.resize((prep.size, prep.size), Image.Resampling.BICUBIC, box=box,
                           reducing_gap=3.0)
    return np.asarray(resized, dtype=np.uint8)

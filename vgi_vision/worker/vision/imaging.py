"""Turning untrusted image bytes or paths into model-ready pixels (and thumbnails).

Everything here is total on hostile input: any image that cannot be decoded safely becomes
``None`` ("no prediction") instead of an exception, because one bad row in a table must never
fail a whole query. Limits are checked from the header *before* pixels are decoded, so a
decompression bomb costs a header parse, not gigabytes of memory.

Memory is bounded twice (see :mod:`vgi_vision.worker.vision.budget`, which formats are
opened and what their decoders cost): one image may need at most
``DecodeLimits.max_decode_bytes``, and every decode in the process (model input, thumbnails,
hashes, OCR) holds its cost in one shared budget while it runs. The pixels that the output
does not cover are never converted: the centre region is box-reduced straight from the
decoded frame, so colour conversion and resampling run on an image a few times the output
size, however large the input.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image

from vgi_vision.worker.vision.budget import (
    PACKED_SIXTEEN_BIT_MODES,
    DecodeLimits,
    decode_cost,
    open_image,
    shared_budget,
)

log = logging.getLogger(__name__)

#: What callers may hand to the decoder: raw bytes, a file path, or nothing (SQL NULL).
ImageSource = bytes | bytearray | memoryview | str | os.PathLike | None

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}

#: Resampling first box-reduces by an integer factor while the source stays at least this
#: many times the output size (Pillow's ``reducing_gap``): quality is that of a direct resize.
REDUCING_GAP = 3.0

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


Parsed = TypeVar("Parsed")


def read_untrusted(source: ImageSource, limits: DecodeLimits,
                   parse: Callable[[bytes], Parsed | None]) -> Parsed | None:
    """Read ``source`` and ``parse`` its bytes; None if there is nothing to read or it fails.

    Image bytes and paths come from SQL rows: Pillow (and the libraries under it) raise many
    exception types on hostile input and warn about odd files, so every reader of image bytes
    goes through here to stay total: one bad row is "no result", never a failed call.
    """
    data = read_source(source, limits)
    if data is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return parse(data)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile input
        log.debug("unreadable image (%d bytes): %s: %s", len(data), type(exc).__name__, exc)
        return None


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

    The thumbnail is made from the frame already decoded for the model (at JPEG draft scale),
    so it costs a reduce and a small encode, not a second decode.
    """
    return read_untrusted(source, limits,
                          lambda data: _decode_bytes(data, limits, prep, thumbnail))


def _decode_bytes(data: bytes, limits: DecodeLimits, prep: Preprocessing, thumbnail: bool
                  ) -> Decoded | None:
    with decoded_frame(data, limits, shorter_side=prep.resize_shorter_side) as image:
        if image is None:
            return None
        orientation = image.getexif().get(ORIENTATION_TAG)
        pixels = upright(resize_center_crop(image, prep), orientation)
        small = None
        if thumbnail:
            factor = int(max(image.size) // (THUMBNAIL_SIDE * 2))
            small = jpeg_thumbnail(whole_picture(image, factor, orientation))
    return Decoded(pixels, small)


@contextlib.contextmanager
def decoded_frame(data: bytes, limits: DecodeLimits, *, shorter_side: int | None = None,
                  longer_side: int | None = None, working_pixels: int = 0
                  ) -> Iterator[Image.Image | None]:
    """The first frame of ``data``, loaded, while its decode cost is held; None over a limit.

    Raises on undecodable bytes (callers catch). JPEG draft mode lets libjpeg scale by
    1/2..1/8 while decoding, so a 24 MP photo is never materialized at full size when the
    caller needs only ``shorter_side`` (or ``longer_side``) pixels; the cost is judged at
    that scale, and held in the process's decode budget until the block ends, with the
    caller's ``working_pixels`` (see :func:`decode_cost`).
    """
    with open_image(data) as image:
        width, height = image.size
        if width <= 0 or height <= 0 or width * height > limits.max_pixels:
            yield None
            return
        image.seek(0)  # animated formats: the first frame
        if shorter_side is not None:
            scale = max(shorter_side / min(width, height), 1e-9)
        else:
            scale = min(1.0, (longer_side or max(width, height)) / max(width, height))
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        cost = decode_cost(image.mode, *image.size, image.format,  # what draft will decode
                           working_pixels)
        if cost > limits.max_decode_bytes:
            yield None
            return
        with shared_budget(limits.pool_bytes).reserve(cost) as admitted:
            if not admitted:
                yield None
                return
            image.load()
            yield image


def load_rgb(data: bytes, limits: DecodeLimits, shorter_side: int) -> Image.Image | None:
    """The whole first frame of ``data`` as upright RGB, None if over a limit.

    Box-reduced while its shorter side stays at least ``REDUCING_GAP x shorter_side``, so
    callers resizing to ``shorter_side`` lose nothing. Raises on undecodable bytes.
    """
    with decoded_frame(data, limits, shorter_side=shorter_side) as image:
        if image is None:
            return None
        factor = int(min(image.size) // (shorter_side * REDUCING_GAP))
        return whole_picture(image, factor, image.getexif().get(ORIENTATION_TAG))


def whole_picture(image: Image.Image, factor: int, orientation: object,
                  longer_side: int | None = None) -> Image.Image:
    """The whole ``image`` box-reduced by ``factor`` (if >= 2), then resized to at most
    ``longer_side`` if given, as upright RGB, in a new image that outlives the file it was
    decoded from.

    Both steps run in the stored mode (widened only as far as Pillow needs to resample it),
    so conversion to RGB only ever sees the small result.
    """
    stored_mode = image.mode
    small = reducible(image).reduce(factor) if factor >= 2 else image
    if longer_side is not None and max(small.size) > longer_side:
        shrink = longer_side / max(small.size)
        small = reducible(small).resize(
            (max(1, round(small.width * shrink)), max(1, round(small.height * shrink))),
            Image.Resampling.LANCZOS)
    rgb = to_rgb(small, stored_mode)
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    if method is not None:
        return rgb.transpose(method)
    return rgb.copy() if rgb is image else rgb


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


ORIENTATION_TAG = 0x0112
#: EXIF orientation -> the transposition that shows the picture upright (as ImageOps does).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def upright(pixels: np.ndarray, orientation: object) -> np.ndarray:
    """Apply EXIF orientation to the square output.

    The centred square the output is cut from is the same set of pixels in every
    orientation, so turning the small result equals turning the whole decoded image first.
    """
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(method), dtype=np.uint8)


def to_rgb(image: Image.Image, stored_mode: str | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without losing what the picture shows.

    Transparency is composited onto white (dropping alpha would turn transparent pixels into
    whatever colour happens to be stored under them), and 16-bit images are rescaled rather than
    clipped (a plain convert would saturate everything above 255 to white). ``stored_mode`` is
    the mode the file stored, when ``image`` was widened to be reduced (16-bit to "I").
    """
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        return eight_bit(image, stored_mode or image.mode).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def eight_bit(image: Image.Image, stored_mode: str) -> Image.Image:
    """A 16-bit, 32-bit or float ``image`` rescaled to 8-bit "L" (white at the stored mode's
    full scale, negatives black), in Pillow's own loops: no float copy of the pixels is made.
    """
    if image.mode not in ("I;16", "I", "F"):
        image = image.convert("I")  # Pillow scales only the native 16-bit layout
    _, brightest = image.getextrema()  # one band: (lowest, highest)
    assert isinstance(brightest, (int, float))
    top = full_scale(stored_mode, max(float(brightest), 0.0))
    return image.point(lambda value: value * (255.0 / top)).convert("L")


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
    pixels as resize-then-crop for a fraction of the work. A large region is first
    box-reduced straight out of the decoded frame, so conversion to RGB only ever sees a
    small image.
    """
    width, height = image.size
    side = min(width, height) * prep.size / prep.resize_shorter_side
    left, top = (width - side) / 2, (height - side) / 2
    region = (math.floor(left), math.floor(top), math.ceil(left + side), math.ceil(top + side))
    box = (left - region[0], top - region[1], left - region[0] + side, top - region[1] + side)
    factor = int(side // (prep.size * REDUCING_GAP))
    stored_mode = image.mode
    if factor >= 2:
        image = reducible(image).reduce(factor, box=region)
        box = tuple(edge / factor for edge in box)  # type: ignore[assignment]
    else:
        image = image.crop(region)  # small: the whole region is under 3x the output size
    rgb = to_rgb(image, stored_mode)
    resized = rgb.resize((prep.size, prep.size), Image.Resampling.BICUBIC, box=box,
                         reducing_gap=REDUCING_GAP)
    return np.asarray(resized, dtype=np.uint8)


def reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode Pillow can box-reduce ("1", "P" and packed 16-bit it cannot)."""
    if image.mode in PACKED_SIXTEEN_BIT_MODES:
        return image.convert("I")
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA")  # keeps the palette's transparency, if any
    return image


@dataclass(frozen=True)
class OrientedImage:
    """Upright RGB pixels (EXIF orientation applied), possibly downscaled for a model.

    ``scale`` maps pixel coordinates of ``pixels`` back to the upright original image
    (original = pixels * scale), so results can be reported in the image's own pixels.
    """

    pixels: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> float:
        return self.width / self.pixels.shape[1]


def decode_upright(source: ImageSource, limits: DecodeLimits, max_side: int
                   ) -> OrientedImage | None:
    """Decode ``source`` upright, its longer side at most ``max_side`` pixels; or None.

    For models that read the whole picture (OCR) rather than a centre crop. Total on hostile
    input, with the same header-first limits and decode budget as :func:`decode`: the frame is
    box-reduced, then resized, before any conversion, so nothing larger than the frame and its
    widening to a mode Pillow resamples is ever held at full size.
    """
    return read_untrusted(source, limits, lambda data: _decode_upright(data, limits, max_side))


def _decode_upright(data: bytes, limits: DecodeLimits, max_side: int) -> OrientedImage | None:
    with decoded_frame(data, limits, longer_side=max_side, working_pixels=max_side**2) as image:
        if image is None:
            return None
        with open_image(data) as header:
            width, height = header.size  # the stored size, before JPEG draft scaling
        orientation = image.getexif().get(ORIENTATION_TAG)
        factor = int(max(image.size) // max_side)  # box-reduced to under twice max_side
        rgb = whole_picture(image, factor, orientation, longer_side=max_side)
    turned = orientation in (5, 6, 7, 8)  # these orientations swap the sides
    upright_w, upright_h = (height, width) if turned else (width, height)
    return OrientedImage(np.asarray(rgb, dtype=np.uint8), upright_w, upright_h)

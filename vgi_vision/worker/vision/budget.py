"""What a decode may cost: the memory model of decoding an image, and the budget that bounds it.

One image's decode may need at most ``DecodeLimits.max_decode_bytes`` (its pixels times the
bytes a pixel this module holds for its mode and format, see :func:`decode_cost`), and every
decode in the process holds its cost in one :class:`DecodeBudget` of
``DecodeLimits.pool_bytes`` while it runs (:func:`shared_budget`).

Only the formats in :data:`DECODER_BYTES_PER_PIXEL` are ever opened: formats whose size is
stated in a header read before any pixel is decoded, each with what its decoder holds on top
of the frame counted in the cost. Others are refused unopened, because Pillow decodes some of
them while merely opening the file (ICO and ICNS decode an embedded PNG of any size before a
limit can be checked). Measured peaks of an RGB decode in bytes a pixel, 7000 x 7000 (4000 x
4000 in parentheses): WebP 16.1 (16.3), its decoder keeping a canvas of its own and a copy of
the decoded bytes; JPEG 2000 19.4 (19.6), OpenJPEG holding 32-bit planes; AVIF 9.3 (9.6),
libavif holding YUV planes and an RGB copy; PNG, BMP and TIFF 4.2-4.4 (4000 x 4000), the
frame itself; JPEG far less (draft mode). The three dear ones still decode, what they hold
beyond the frame counted in the cost, so under the default 256 MB an image they are refused
above about 15 (WebP), 12.5 (JPEG 2000) and 20 (AVIF) megapixels.
"""

from __future__ import annotations

import contextlib
import functools
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageFile

# Pillow's own bomb check only warns below twice its limit; ours is explicit (DecodeLimits),
# so Pillow's is switched off to keep one rule in one place.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Pillow's packed 16-bit modes: 2 bytes a pixel stored, widened to 32-bit "I" to be reduced.
PACKED_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
MiB = 1 << 20

#: Bytes a decode holds per pixel of the frame, by mode (measured peaks): Pillow's storage (1
#: byte for "1", "L", "P"; 2 for packed 16-bit; 4 for everything else, RGB included), plus the
#: full-size copies made on the way to a reduced image: a widening for the modes Pillow
#: cannot box-reduce ("1" -> L, "P" -> RGBA, 16-bit -> 32-bit "I") and the premultiplied copy
#: that reducing an image with straight alpha makes.
_BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 9, "RGBA": 8, "LA": 8, "PA": 8,
                    **{mode: 6 for mode in PACKED_SIXTEEN_BIT_MODES}}
_DEFAULT_BYTES_PER_PIXEL = 4

#: What a decode holds besides the frame: decoder row buffers and the reduced working image
#: (at most ``(imaging.REDUCING_GAP * 2 * 256) ** 2`` pixels of 4 bytes), rounded up.
DECODE_OVERHEAD_BYTES = 16 * MiB

#: Bytes a pixel of a working image larger than the overhead covers (OCR's whole picture) is
#: held in while it is resized and converted: the resample in a widened mode, its 8-bit and
#: RGB conversions and the array handed on (measured: 12).
WORKING_BYTES_PER_PIXEL = 16


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep one hostile image, or many at once, from exhausting the worker."""

    max_pixels: int = 64_000_000
    max_bytes: int = 64 * MiB
    #: Memory one image's decode may need (:func:`decode_cost`), judged from the header: a
    #: 64-megapixel RGB image fits, a 64-megapixel 16-bit one (6 bytes a pixel) does not.
    max_decode_bytes: int = 256 * MiB
    #: Memory all decodes in the process may hold at once (:func:`shared_budget`).
    pool_bytes: int = 512 * MiB


#: The Pillow formats an image may be opened as, and the bytes a pixel that format's decoder
#: holds besides the frame (measured, see the module docstring). Pillow's other formats are
#: never opened: some decode pixels inside ``Image.open``, before any limit is checked. (JPEG
#: covers MPO, the multi-picture JPEG of phones: Pillow opens those through JPEG.)
DECODER_BYTES_PER_PIXEL = {"JPEG": 0, "PNG": 0, "GIF": 0, "BMP": 0, "TIFF": 0,
                           "WEBP": 12, "JPEG2000": 16, "AVIF": 8}
DECODABLE_FORMATS = tuple(DECODER_BYTES_PER_PIXEL)


def open_image(data: bytes) -> Image.Image:
    """``data`` opened (headers parsed, no pixel decoded) if it is in a decodable format.

    Every reader of untrusted image bytes opens them through here. Raises on anything else.
    """
    return Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)


def decode_cost(mode: str, width: int, height: int, image_format: str | None = None,
                working_pixels: int = 0) -> int:
    """The most memory decoding a ``width x height`` frame of ``mode`` holds at once.

    Only the first frame of an animated or multi-page file is ever decoded, so it is the
    frame that counts, plus what the ``image_format``'s decoder holds while producing it and
    the caller's working image of up to ``working_pixels`` pixels.
    """
    per_pixel = _BYTES_PER_PIXEL.get(mode, _DEFAULT_BYTES_PER_PIXEL)
    per_pixel += DECODER_BYTES_PER_PIXEL.get(image_format or "", 0)
    return (width * height * per_pixel + working_pixels * WORKING_BYTES_PER_PIXEL
            + DECODE_OVERHEAD_BYTES)


class DecodeBudget:
    """A byte budget shared by concurrent decodes: a decode waits until its cost fits.

    Any single cost up to the capacity is admitted (alone if need be), so nothing starves
    and a waiting decode holds no memory; a cost above the capacity is refused at once.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, cost: int) -> Iterator[bool]:
        """Hold ``cost`` bytes for the block; yields False (holding nothing) if it never fits."""
        if cost > self.capacity:
            yield False
            return
        with self._changed:
            self._changed.wait_for(lambda: self._used + cost <= self.capacity)
            self._used += cost
        try:
            yield True
        finally:
            with self._changed:
                self._used -= cost
                self._changed.notify_all()


@functools.cache
def shared_budget(capacity: int) -> DecodeBudget:
    """The process's one budget of ``capacity`` bytes: every decode under the same limits
    draws on it, whichever function or thread it runs for."""
    return DecodeBudget(capacity)

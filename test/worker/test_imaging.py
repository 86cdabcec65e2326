"""Decoding untrusted images: every format and mode, orientation, draft mode, hostile input.

Images are built in memory with Pillow (or byte by byte, for headers Pillow refuses to write),
so every test states exactly what the picture shows. Colours are checked over regions, never
single pixels: JPEG and WebP are lossy, and the decoder resamples.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vgi_vision.worker.vision import imaging
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.imaging import Preprocessing, decode

DATA = Path(__file__).resolve().parents[1] / "sql" / "data"
SIZE = Preprocessing().size

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

T = Image.Transpose


# --- helpers ---------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def faithful(fmt: str) -> dict:
    """Save options that keep colours exact (or, for JPEG, close) in ``fmt``."""
    return {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})


def assert_image(array) -> np.ndarray:
    assert array is not None, "decode returned None for a valid image"
    assert isinstance(array, np.ndarray)
    assert array.shape == (SIZE, SIZE, 3)
    assert array.dtype == np.uint8
    return array


def region(array: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    return array[rows, cols].reshape(-1, 3).astype(np.float64).mean(axis=0)


# Regions of the 224x224 output well inside each half / quadrant (away from the edges, where
# bicubic resampling and JPEG blocks blend neighbouring colours).
LEFT = (slice(40, 184), slice(15, 95))
RIGHT = (slice(40, 184), slice(129, 209))
QUADRANTS = {"tl": (slice(25, 90), slice(25, 90)), "tr": (slice(25, 90), slice(134, 199)),
             "bl": (slice(134, 199), slice(25, 90)), "br": (slice(134, 199), slice(134, 199))}


def assert_colour(array: np.ndarray, where: tuple[slice, slice], colour, tolerance=24.0):
    mean = region(array, *where)
    assert np.abs(mean - np.asarray(colour)).max() <= tolerance, \
        f"expected ~{colour} in region {where}, got {mean.round(1).tolist()}"


def halves(left, right, size=(96, 64), mode="RGB") -> Image.Image:
    """A ``mode`` image whose left half is ``left`` and right half is ``right``."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def handmade_png(width: int, height: int, rows: bytes = b"") -> bytes:
    """An 8-bit RGB PNG with the given header size (valid CRCs) and ``rows`` as pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def noise(width=160, height=120, seed=0) -> Image.Image:
    """Incompressible pixels, so pixel data fills most of the file (for truncation)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --- formats ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_format_decodes_to_model_pixels(fmt):
    data = encode(halves(RED, BLUE), fmt, **faithful(fmt))
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == fmt
    array = assert_image(decode(data))
    assert_colour(array, LEFT, RED)
    assert_colour(array, RIGHT, BLUE)


@pytest.mark.parametrize("name", ["cat.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg"])
def test_committed_fixtures_decode_the_same_from_every_kind_of_source(name):
    path = DATA / name
    data = path.read_bytes()
    reference = assert_image(decode(data))
    for source in (bytearray(data), memoryview(data), path, str(path)):
        np.testing.assert_array_equal(decode(source), reference)


@pytest.mark.parametrize("size", [(1, 1), (1, 700), (700, 1), (3, 2), (223, 224), (5000, 3)])
def test_tiny_and_extreme_aspect_images(size):
    assert_image(decode(encode(Image.new("RGB", size, GREEN), "PNG")))


def test_output_is_the_centre_crop_of_the_shorter_side():
    # 300x100: a 256-wide resize would be 768x256, and the 224 crop sees only the middle third.
    image = Image.new("RGB", (300, 100), RED)
    image.paste(BLUE, (100, 0, 200, 100))
    array = assert_image(decode(encode(image, "PNG")))
    assert_colour(array, (slice(0, SIZE), slice(0, SIZE)), BLUE, tolerance=1)


# --- modes -----------------------------------------------------------------------------------

def palette_image(with_transparency: bool) -> tuple[Image.Image, dict]:
    """P image: left half index 0 (red), right half index 1 (blue); index 0 transparent."""
    image = Image.new("P", (96, 64), 0)
    image.putpalette([*RED, *BLUE] + [0, 0, 0] * 254)
    image.paste(1, (48, 0, 96, 64))
    return image, ({"transparency": 0} if with_transparency else {})


def sixteen_bit(value_left: int, value_right: int) -> Image.Image:
    pixels = np.full((64, 96), value_left, dtype=np.uint16)
    pixels[:, 48:] = value_right
    return Image.fromarray(pixels)  # mode I;16


def one_bit() -> Image.Image:
    return halves(0, 1, mode="1")  # left black, right white


def cmyk() -> Image.Image:
    return halves((0, 255, 255, 0), (255, 255, 0, 0), mode="CMYK")  # red | blue


MODE_CASES = {
    # id: (build -> (image, save options), formats, mode Pillow must read back, left, right)
    "L": (lambda: (halves(30, 220, mode="L"), {}), ["PNG", "TIFF", "BMP", "JPEG"], "L",
          (30, 30, 30), (220, 220, 220)),
    "P": (lambda: palette_image(False), ["PNG", "GIF", "BMP", "TIFF"], "P", RED, BLUE),
    "P+transparency": (lambda: palette_image(True), ["PNG", "GIF"], "P", WHITE, BLUE),
    # Fully transparent red must composite to white (not stay red, not turn black); half
    # transparent red over white is pink; opaque blue stays blue.
    "RGBA": (lambda: (halves((255, 0, 0, 0), (0, 0, 255, 255), mode="RGBA"), {}),
             ["PNG", "TIFF", "WEBP"], "RGBA", WHITE, BLUE),
    "RGBA-half": (lambda: (halves((255, 0, 0, 128), (0, 0, 255, 255), mode="RGBA"), {}),
                  ["PNG", "TIFF"], "RGBA", (255, 127, 127), BLUE),
    "LA": (lambda: (halves((0, 0), (0, 255), mode="LA"), {}), ["PNG", "TIFF"], "LA",
           WHITE, BLACK),
    "CMYK": (lambda: (cmyk(), {}), ["JPEG", "TIFF"], "CMYK", RED, BLUE),
    # 16-bit: mid-gray 32768 must be ~128, not saturated to 255; full scale stays white.
    "I;16": (lambda: (sixteen_bit(32768, 65535), {}), ["PNG", "TIFF"], "I;16",
             (128, 128, 128), WHITE),
    "1": (lambda: (one_bit(), {}), ["PNG", "BMP", "TIFF"], "1", BLACK, WHITE),
}


@pytest.mark.parametrize("fmt_case", [(case, fmt) for case, spec in MODE_CASES.items()
                                      for fmt in spec[1]], ids=lambda c: f"{c[0]}-{c[1]}")
def test_every_mode_decodes_to_rgb(fmt_case):
    case, fmt = fmt_case
    build, _, expected_mode, left, right = MODE_CASES[case]
    image, options = build()
    data = encode(image, fmt, **{**faithful(fmt), **options})
    with Image.open(io.BytesIO(data)) as check:  # the file really is in the mode under test
        assert check.mode == expected_mode, f"{fmt} stored {case} as {check.mode}"
    array = assert_image(decode(data))
    tolerance = 24.0 if fmt in ("JPEG", "WEBP") else 3.0
    assert_colour(array, LEFT, left, tolerance)
    assert_colour(array, RIGHT, right, tolerance)


def test_fully_transparent_red_is_white():
    data = encode(Image.new("RGBA", (64, 64), (255, 0, 0, 0)), "PNG")
    np.testing.assert_array_equal(assert_image(decode(data)), 255)


def test_sixteen_bit_mid_gray_is_mid_gray():
    data = encode(Image.fromarray(np.full((50, 50), 32768, dtype=np.uint16)), "PNG")
    array = assert_image(decode(data))
    assert 126 <= array.min() and array.max() <= 129


# --- animation -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_first_frame_of_an_animation_is_used(fmt):
    first, second = Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)
    data = encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0,
                  **faithful(fmt))
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 2
    array = assert_image(decode(data))
    assert_colour(array, (slice(0, SIZE), slice(0, SIZE)), RED, tolerance=3)


def test_first_frame_even_if_the_last_frame_is_the_different_one():
    frames = [Image.new("RGB", (64, 64), c) for c in (RED, RED, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert_colour(assert_image(decode(data)), (slice(0, SIZE), slice(0, SIZE)), RED, 3)


# --- EXIF orientation ------------------------------------------------------------------------

#: How to store a picture so that a viewer honouring EXIF ``Orientation`` shows the original:
#: the inverse of the transform the tag asks for (2, 3, 4, 5, 7 are their own inverses).
STORED_AS = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
             5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}
QUADRANT_COLOURS = {"tl": RED, "tr": GREEN, "bl": BLUE, "br": YELLOW}


def quadrant_picture(size=256) -> Image.Image:
    """What the viewer should see: four differently coloured quadrants (asymmetric under
    every rotation and mirror)."""
    half = size // 2
    image = Image.new("RGB", (size, size))
    for (x, y), colour in {(0, 0): RED, (half, 0): GREEN, (0, half): BLUE,
                           (half, half): YELLOW}.items():
        image.paste(colour, (x, y, x + half, y + half))
    return image


def with_orientation(picture: Image.Image, orientation: int, fmt: str) -> bytes:
    transform = STORED_AS[orientation]
    stored = picture if transform is None else picture.transpose(transform)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **faithful(fmt))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_in_jpeg(orientation):
    data = with_orientation(quadrant_picture(), orientation, "JPEG")
    array = assert_image(decode(data))
    for name, where in QUADRANTS.items():
        assert_colour(array, where, QUADRANT_COLOURS[name])
    if orientation != 1:  # the stored pixels alone really would look different
        with Image.open(io.BytesIO(data)) as raw:
            raw_pixels = np.asarray(raw.convert("RGB").resize((SIZE, SIZE)))
        assert any(np.abs(region(raw_pixels, *where) - QUADRANT_COLOURS[name]).max() > 100
                   for name, where in QUADRANTS.items())


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_honoured_in_other_formats(fmt, orientation):
    array = assert_image(decode(with_orientation(quadrant_picture(), orientation, fmt)))
    for name, where in QUADRANTS.items():
        assert_colour(array, where, QUADRANT_COLOURS[name])


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_of_a_non_square_picture(orientation):
    # Shown landscape (red | blue), stored portrait: the crop must come from the shown picture.
    array = assert_image(decode(with_orientation(halves(RED, BLUE, size=(384, 256)),
                                                 orientation, "JPEG")))
    assert_colour(array, LEFT, RED)
    assert_colour(array, RIGHT, BLUE)


# --- JPEG draft mode -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 6000x4000 (24 MP) JPEG: red left half, blue right half."""
    pixels = np.empty((4000, 6000, 3), dtype=np.uint8)
    pixels[:, :3000] = RED
    pixels[:, 3000:] = BLUE
    return encode(Image.fromarray(pixels), "JPEG", quality=85)


def test_large_jpeg_is_decoded_in_draft_mode(big_jpeg, monkeypatch):
    """Draft mode is observed directly: the size of the image that reaches colour conversion.

    Timing would be flaky on shared CI machines, and tracemalloc cannot see Pillow's pixel
    buffers (they are allocated in C, outside Python's allocator). So we record the size of
    the decoded image handed to ``to_rgb``: with draft mode libjpeg scales by 1/8 while
    decoding (750x500, ~1 MB of pixels); without it the full 6000x4000 (72 MB) is decoded.
    """
    seen: list[tuple[int, int]] = []
    original = imaging.to_rgb

    def spy(image, *args):
        seen.append(image.size)
        return original(image, *args)

    monkeypatch.setattr(imaging, "to_rgb", spy)
    array = assert_image(decode(big_jpeg))
    assert_colour(array, LEFT, RED)
    assert_colour(array, RIGHT, BLUE)
    assert len(seen) == 1
    width, height = seen[0]
    assert width * height <= 6000 * 4000 // 16, f"decoded at {seen[0]}: draft mode not used"
    # ...but never below what the resize needs (shorter side >= 256): quality is preserved.
    assert min(width, height) >= Preprocessing().resize_shorter_side


def test_draft_mode_with_exif_rotation():
    """Draft sizing uses the stored (pre-rotation) size; the result is still upright."""
    picture = halves(RED, BLUE, size=(3000, 2000))
    array = assert_image(decode(with_orientation(picture, 6, "JPEG")))
    assert_colour(array, LEFT, RED)
    assert_colour(array, RIGHT, BLUE)


# --- hostile input ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    None, b"", bytearray(), memoryview(b""), b"\x00", b"not an image at all",
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0" + b"\x00" * 100, b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM", b"II*\x00", b"MM\x00*", b"%PDF-1.4\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    bytes(range(256)) * 4,
], ids=lambda source: repr(source)[:24])
def test_garbage_is_none(source):
    assert decode(source) is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_truncated_files_are_none(fmt):
    data = encode(noise(), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    assert_image(decode(data))
    for fraction in (0.005, 0.02, 0.1, 0.25, 0.5, 0.75, 0.9):
        assert decode(data[:int(len(data) * fraction)]) is None, f"cut at {fraction:.0%}"
    for missing in (1, 2, 5, 16):
        # Cutting only trailer bytes (e.g. PNG's IEND) may leave every pixel intact: either
        # answer is fine, as long as it is an answer.
        result = decode(data[:-missing])
        assert result is None or assert_image(result) is not None


def test_decompression_bomb_png_is_rejected_from_its_header(pixel_loads):
    bomb = handmade_png(100_000, 100_000)
    with Image.open(io.BytesIO(bomb)) as check:  # Pillow accepts the header as genuine...
        assert check.size == (100_000, 100_000)
    assert decode(bomb) is None  # ...and decode refuses it without decoding a single pixel
    # Just over the default 64 MP limit: small enough that Pillow *could* allocate it.
    assert decode(handmade_png(9000, 9000)) is None
    assert pixel_loads == []


def test_decompression_bomb_jpeg_is_rejected_from_its_header():
    data = bytearray(encode(Image.new("RGB", (16, 16), RED), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    with Image.open(io.BytesIO(bytes(data))) as check:
        assert check.size == (60000, 60000)
    assert decode(bytes(data)) is None


def test_pixel_limit_is_exact():
    rows = b"".join(b"\x00" + b"\x80" * 300 for _ in range(100))  # 100x100 gray
    data = handmade_png(100, 100, rows)
    assert_image(decode(data, DecodeLimits(max_pixels=10_000)))
    assert decode(data, DecodeLimits(max_pixels=9_999)) is None


@pytest.mark.parametrize("width,height", [(0, 10), (10, 0), (0, 0)])
def test_zero_size_png_is_none(width, height):
    assert decode(handmade_png(width, height)) is None


def test_zero_size_gif_and_bmp_are_none():
    gif = (b"GIF89a" + struct.pack("<HHBBB", 0, 0, 0, 0, 0)
           + b"\x2c" + struct.pack("<HHHHB", 0, 0, 0, 0, 0) + b"\x02\x02\x44\x01\x00\x3b")
    bmp = (b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
           + struct.pack("<IiiHHIIiiII", 40, 0, 0, 1, 24, 0, 0, 0, 0, 0, 0))
    assert decode(gif) is None
    assert decode(bmp) is None


def test_missing_path_and_directory_are_none(tmp_path):
    assert decode(tmp_path / "missing.png") is None
    assert decode(str(tmp_path / "missing.png")) is None
    assert decode(tmp_path) is None
    assert decode(str(tmp_path)) is None
    assert decode("") is None
    assert decode("bad\x00path.png") is None
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    assert decode(dangling) is None


@pytest.mark.timeout(20)
def test_paths_that_are_not_regular_files_never_block(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    assert decode(fifo) is None  # opening a FIFO for reading would block forever
    assert decode("/dev/zero") is None  # endless


def test_path_whose_read_fails():
    # A regular file (for stat) whose read fails with EIO, even for root (who could read a
    # chmod 000 file, so permission bits cannot test this branch on CI).
    assert decode("/proc/self/mem") is None


def test_byte_limit(tmp_path):
    data = encode(Image.new("RGB", (8, 8), RED), "PNG")
    path = tmp_path / "small.png"
    path.write_bytes(data)
    exact, under = DecodeLimits(max_bytes=len(data)), DecodeLimits(max_bytes=len(data) - 1)
    assert_image(decode(data, exact))
    assert_image(decode(path, exact))
    assert decode(data, under) is None
    assert decode(path, under) is None


def test_default_byte_limit_rejects_a_valid_image_padded_past_it():
    data = encode(Image.new("RGB", (8, 8), RED), "PNG")
    padded = data + bytes(DecodeLimits().max_bytes - len(data) + 1)  # PNG ignores trailing data
    assert_image(decode(padded[:DecodeLimits().max_bytes]))
    assert decode(padded) is None


# --- fuzzing ---------------------------------------------------------------------------------

def _seed_files() -> list[bytes]:
    picture = noise(40, 30, seed=1)
    return [encode(picture, "PNG"), encode(picture, "JPEG", quality=80),
            encode(picture, "WEBP", quality=80), encode(picture, "WEBP", lossless=True),
            encode(picture, "GIF"), encode(picture.convert("RGBA"), "TIFF"),
            encode(picture, "JPEG", progressive=True),
            encode(quadrant_picture(32), "JPEG", exif=Image.Exif().tobytes())]


SEEDS = _seed_files()
MAGIC = [s[:12] for s in SEEDS] + [b"BM", b"II*\x00", b"GIF87a", b"\x00\x00\x01\x00"]
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def assert_total(result) -> None:
    assert result is None or assert_image(result) is not None


@pytest.mark.timeout(120, method="thread")
@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data):
    assert_total(decode(data))


@pytest.mark.timeout(120, method="thread")
@FUZZ
@given(st.sampled_from(MAGIC), st.binary(max_size=2048))
def test_fuzz_random_bytes_behind_a_real_magic_number(magic, tail):
    assert_total(decode(magic + tail))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):  # bit flips and byte overwrites
        position = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[position] ^= 1 << draw(st.integers(0, 7))
        else:
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    if draw(st.booleans()):  # and maybe a truncation
        del data[draw(st.integers(0, len(data) - 1)):]
    return bytes(data)


@pytest.mark.timeout(120, method="thread")
@FUZZ
@given(mutated())
def test_fuzz_mutated_valid_files(data):
    assert_total(decode(data))


@pytest.mark.timeout(120, method="thread")
def test_fuzz_header_mutations_exhaustively():
    """Every single-byte change (0x00 / 0xFF / bit 7 flipped) of each seed's first 64 bytes,
    where sizes, modes and chunk lengths live."""
    for seed in SEEDS:
        for position in range(min(64, len(seed))):
            for value in {0x00, 0xFF, seed[position] ^ 0x80}:
                data = bytearray(seed)
                data[position] = value
                assert_total(decode(bytes(data)))

"""Images built to exhaust memory: refused from their header, or decoded within a budget.

The memory claims are measured on a real worker process (its peak RSS, ``VmHWM``), against
the bound docs/security.md states.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import DATA
from PIL import Image

from vgi_vision.client.client import Client
from vgi_vision.testing.launch import running_worker
from vgi_vision.worker.vision.budget import (
    DECODE_OVERHEAD_BYTES,
    DecodeBudget,
    DecodeLimits,
    decode_cost,
)
from vgi_vision.worker.vision.imaging import decode, decode_upright

MB = 1 << 20


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def flat_png(width: int, height: int, pixel: bytes, bit_depth: int, color_type: int) -> bytes:
    """A genuine PNG of one colour, written row by row: tiny on disk, however large decoded."""
    row = b"\x00" + pixel * width
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def gray16_png(width: int, height: int, value: int = 1000) -> bytes:
    """A genuine 16-bit grayscale PNG of one value: ``width*height*2`` bytes decoded."""
    return flat_png(width, height, struct.pack(">H", value), bit_depth=16, color_type=0)


def ico_around(png: bytes) -> bytes:
    """An ICO file whose one icon is ``png`` (its directory claims 256 x 256)."""
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def icns_around(png: bytes) -> bytes:
    """An ICNS file whose one icon ("ic10", 1024 x 1024 by its type) is ``png``."""
    entry = b"ic10" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


@pytest.fixture(scope="module")
def icon_bombs() -> list[bytes]:
    """An ICO and an ICNS around a 16000 x 16000 RGBA PNG: ~1 MB each, 1 GB decoded, and
    Pillow decodes an icon's PNG while opening the file."""
    png = flat_png(16000, 16000, b"\x00\x00\x00\x00", bit_depth=8, color_type=6)
    return [ico_around(png), icns_around(png)]


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The 8000x7999 16-bit grayscale PNG: ~140 KB, 64 million pixels, 128 MB of samples."""
    data = gray16_png(8000, 7999)
    assert len(data) < 160_000
    return data


def test_sixteen_bit_bomb_is_refused_from_its_header(bomb: bytes, pixel_loads) -> None:
    with Image.open(io.BytesIO(bomb)) as check:  # within the 64-megapixel cap
        assert check.size == (8000, 7999) and check.mode.startswith("I;16")
    assert decode(bomb) is None
    assert pixel_loads == []  # no pixel was decoded
    # Decoding it needs the 16-bit samples plus their 32-bit widening: over the default cap.
    assert decode_cost("I;16", 8000, 7999) > DecodeLimits().max_decode_bytes


def test_decode_byte_cap_is_exact() -> None:
    image = Image.new("L", (100, 100), 128)
    out = io.BytesIO()
    image.save(out, "PNG")
    cost = decode_cost("L", 100, 100)
    assert cost == 100 * 100 + DECODE_OVERHEAD_BYTES
    assert decode(out.getvalue(), DecodeLimits(max_decode_bytes=cost)) is not None
    assert decode(out.getvalue(), DecodeLimits(max_decode_bytes=cost - 1)) is None


def test_a_large_sixteen_bit_image_decodes_within_its_cost() -> None:
    """Allowed through, the 16-bit path scales to 8 bits without clipping to white."""
    data = gray16_png(3000, 2000, value=32768)
    pixels = decode(data, DecodeLimits(max_decode_bytes=64 * MB))
    assert pixels is not None and pixels.shape == (224, 224, 3)
    assert abs(float(pixels.mean()) - 128) < 2


def test_budget_admits_what_fits_and_refuses_what_never_can() -> None:
    budget = DecodeBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def use(cost: int) -> None:
        with budget.reserve(cost) as admitted:
            assert admitted
            with lock:
                held[0] += cost
                peak[0] = max(peak[0], held[0])
            time.sleep(0.01)
            with lock:
                held[0] -= cost

    threads = [threading.Thread(target=use, args=(cost,)) for cost in [60, 50, 40, 100, 30] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < peak[0] <= 100
    with budget.reserve(101) as admitted:
        assert admitted is False


def kilobytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_dozen_bombs_in_one_call_stay_within_the_stated_bound(bomb: bytes, tmp_path: Path
                                                                 ) -> None:
    """docs/security.md: peak RSS <= at rest + decode pool + 2 x the request + 64 MB."""
    coffee = (DATA / "coffee.png").read_bytes()
    with running_worker("unix", workdir=tmp_path) as worker, Client(worker.location) as client:
        pid = worker.process.pid if worker.process else 0
        assert client.call("top_label", pa.array([coffee], pa.binary())).to_pylist() == [
            "espresso"]
        at_rest = kilobytes(pid, "VmRSS")
        images = pa.array([bomb] * 12 + [coffee], pa.binary())
        assert client.call("top_label", images).to_pylist() == [None] * 12 + ["espresso"]
        bound = at_rest + (512 * MB + 2 * images.nbytes + 64 * MB) // 1024
        assert kilobytes(pid, "VmHWM") <= bound
        assert client.call("top_label", pa.array([coffee], pa.binary())).to_pylist() == [
            "espresso"]


def test_sixteen_bit_images_let_through_share_the_decode_pool(tmp_path: Path) -> None:
    """A dozen 15-megapixel 16-bit PNGs (~90 MB to decode each) in one call, decode pool
    of 128 MB: at most one decodes at a time, and the peak stays within the bound."""
    image = gray16_png(5000, 3000, value=40000)
    assert decode_cost("I;16", 5000, 3000) < 128 * MB < 2 * decode_cost("I;16", 5000, 3000)
    with running_worker("unix", "--decode-pool-mb", "128", workdir=tmp_path) as worker, \
            Client(worker.location) as client:
        pid = worker.process.pid if worker.process else 0
        assert client.call("top_label", pa.array([image], pa.binary())).to_pylist()[0]
        at_rest = kilobytes(pid, "VmRSS")
        images = pa.array([image] * 12, pa.binary())
        labels = client.call("top_label", images).to_pylist()
        assert all(isinstance(label, str) for label in labels)  # every one was decoded
        bound = at_rest + (128 * MB + 2 * images.nbytes + 64 * MB) // 1024
        assert kilobytes(pid, "VmHWM") <= bound


def test_decode_cost_covers_the_measured_peak_of_every_reducible_mode() -> None:
    """Each mode's estimate is at least what Pillow really holds (checked on this process's
    peak RSS, which only grows: run from the cheapest mode to the dearest)."""
    for mode in ["L", "1", "RGB", "I;16"]:
        image = Image.new(mode, (3000, 3000), 1 if mode == "1" else 100)
        out = io.BytesIO()
        image.save(out, "PNG")
        del image
        before = kilobytes_self("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
        assert decode(out.getvalue(), DecodeLimits(max_decode_bytes=1 << 30)) is not None
        peak = (kilobytes_self("VmHWM") - before) * 1024
        assert peak <= decode_cost(mode, 3000, 3000), (mode, peak)


def kilobytes_self(field: str) -> int:
    return kilobytes(os.getpid(), field)


def test_icons_that_decode_while_opening_are_never_opened(icon_bombs: list[bytes],
                                                         tmp_path: Path) -> None:
    """top_label and image_info give NULL for icon bombs without decoding them (the peak stays
    far below the gigabyte one decode takes), and the worker serves on."""
    coffee = (DATA / "coffee.png").read_bytes()
    images = pa.array([*icon_bombs, icon_bombs[0], coffee], pa.binary())
    with running_worker("unix", workdir=tmp_path) as worker, Client(worker.location) as client:
        pid = worker.process.pid if worker.process else 0
        assert client.call("top_label", pa.array([coffee], pa.binary())).to_pylist() == [
            "espresso"]
        assert client.call("image_info", pa.array([coffee], pa.binary())).to_pylist()[0]
        at_rest = kilobytes(pid, "VmRSS")
        assert client.call("top_label", images).to_pylist() == [None, None, None, "espresso"]
        infos = client.call("image_info", images).to_pylist()
        assert infos[:3] == [None, None, None] and infos[3]["format"] == "PNG"
        assert kilobytes(pid, "VmHWM") <= at_rest + (2 * images.nbytes + 64 * MB) // 1024
        assert client.call("top_label", pa.array([coffee], pa.binary())).to_pylist() == [
            "espresso"]


GALLERY_FACTS = """
import sys
from pathlib import Path
from vgi_vision.gallery.facts import FilePolicy

def kilobytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

policy = FilePolicy(sys.argv[1])
assert policy.facts("coffee.png")  # everything the call needs is loaded
rest = kilobytes("VmRSS")
print([policy.facts(name) for name in sys.argv[2:]], kilobytes("VmHWM") - rest)
"""


def test_the_gallery_reads_no_facts_from_icon_bombs(icon_bombs: list[bytes],
                                                    tmp_path: Path) -> None:
    """The detail view's facts of an icon bomb under the data root: none, with no decode."""
    (tmp_path / "coffee.png").write_bytes((DATA / "coffee.png").read_bytes())
    names = []
    for number, bomb in enumerate(icon_bombs):
        names.append(f"bomb{number}.ico")
        (tmp_path / names[-1]).write_bytes(bomb)
    done = subprocess.run([sys.executable, "-c", GALLERY_FACTS, str(tmp_path), *names],
                          capture_output=True, text=True, check=True)
    facts, peak_kb = done.stdout.rsplit(maxsplit=1)
    assert facts == str([[]] * len(names))
    assert int(peak_kb) < 64 * 1024


def test_decode_cost_covers_each_decoders_measured_peak() -> None:
    """WebP, JPEG 2000 and AVIF decoders hold several times the frame: counted per format
    (measured on this process's peak RSS, as above)."""
    gradient = np.linspace(0, 255, 3000 * 3000 * 3).astype(np.uint8).reshape(3000, 3000, 3)
    for fmt in ["PNG", "WEBP", "JPEG2000", "AVIF"]:
        out = io.BytesIO()
        Image.fromarray(gradient).save(out, fmt, **({"speed": 10} if fmt == "AVIF" else {}))
        before = kilobytes_self("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        assert decode(out.getvalue(), DecodeLimits(max_decode_bytes=1 << 30)) is not None
        peak = (kilobytes_self("VmHWM") - before) * 1024
        assert peak <= decode_cost("RGB", 3000, 3000, fmt), (fmt, peak)


@pytest.mark.parametrize("side", [5000, 3900])
def test_ocr_decodes_a_sixteen_bit_image_within_its_cost(side: int) -> None:
    """OCR reads the whole picture at up to 2000 px: a 16-bit PNG (60 KB at 5000 x 5000) is
    reduced in its stored mode before any conversion, so the peak stays within the cost the
    decode budget holds for it, its 2000 x 2000 working image included, and grey stays grey.
    (At 6000 x 6000 that cost is over the per-image cap: refused from the header.)"""
    data = gray16_png(side, side, value=32768)
    before = kilobytes_self("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    image = decode_upright(data, DecodeLimits(), 2000)
    peak = (kilobytes_self("VmHWM") - before) * 1024
    assert image is not None and image.pixels.shape == (2000, 2000, 3)
    assert (image.width, image.height) == (side, side)
    assert abs(float(image.pixels.mean()) - 127.5) < 1.5
    assert peak <= decode_cost("I;16", side, side, "PNG", working_pixels=2000 * 2000), peak
    if side == 5000:
        assert decode_upright(gray16_png(6000, 6000), DecodeLimits(), 2000) is None

"""OCR throughput and latency for a page-sized and a photo-sized image.

Two inputs, each rendered here with Pillow's bundled font:

* page   1240 x 1754 PNG (an A4 page at 150 dpi): 40 lines of 18 px text;
* photo  1280 x 960 JPEG: a real photograph (``test/sql/data/rocket.jpg``, resized) with a
         two-line sign drawn on it.

For each, the whole path (``TextReader.read`` on the encoded bytes: decode, EXIF orientation,
padding, detection, recognition, re-reading doubtful lines upside down, reading order) is
timed against the baseline measured in the same run: rapidocr called directly on the
already-decoded pixels, with the same settings. Each number is the median of ``--repeats``
runs after one warm-up; the ratio is baseline time / full time (1.0 = no overhead).

Usage: python -m bench.bench_ocr [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.imaging import decode_upright
from vgi_vision.worker.vision.ocr import MAX_SIDE, TextReader

REPO = Path(__file__).resolve().parent.parent

WORDS = ("invoice total amount due date paid order number customer account balance "
         "shipping address reference payment terms net thirty days").split()


def page_png() -> tuple[bytes, int]:
    """An A4 page at 150 dpi with 40 lines of text; returns (PNG bytes, line count)."""
    image = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=18)
    rng = np.random.default_rng(0)
    lines = 40
    for i in range(lines):
        words = " ".join(rng.choice(WORDS, 9))
        draw.text((110, 120 + i * 38), f"{i + 1}. {words} {rng.integers(10, 999)}.00",
                  font=font, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), lines


def photo_jpeg() -> tuple[bytes, int]:
    """A 1280 x 960 photograph with a two-line sign on it; returns (JPEG bytes, line count)."""
    with Image.open(REPO / "test" / "sql" / "data" / "rocket.jpg") as photo:
        image = photo.convert("RGB").resize((1280, 960), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    draw.rectangle((80, 80, 620, 240), fill="#f4f4f0")
    font = ImageFont.load_default(size=44)
    draw.text((110, 100), "LAUNCH PAD 39A", font=font, fill="#102040")
    draw.text((110, 165), "No entry 06:00-18:00", font=font, fill="#102040")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), 2


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: sessions created, buffers grown
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    reader = TextReader()
    engine = reader.engine()
    limits = DecodeLimits()
    print(f"{'image':<6} {'pixels':>11} {'lines':>5} {'found':>5} {'baseline s':>10} "
          f"{'full s':>7} {'img/s':>6} {'ratio':>6}")
    for name, (data, lines) in (("page", page_png()), ("photo", photo_jpeg())):
        decoded = decode_upright(data, limits, MAX_SIDE)
        assert decoded is not None
        bgr = np.ascontiguousarray(decoded.pixels[:, :, ::-1])
        found = reader.read([data], limits)[0] or []
        baseline = median_seconds(functools.partial(engine, bgr), options.repeats)
        full = median_seconds(functools.partial(reader.read, [data], limits), options.repeats)
        print(f"{name:<6} {decoded.width:>5} x {decoded.height:<4} {lines:>5} {len(found):>5} "
              f"{baseline:>10.3f} {full:>7.3f} {1 / full:>6.2f} {baseline / full:>5.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark inputs: N distinct, real 512x512 JPEGs derived from the committed fixtures.

Every image is a different crop (position and scale), optionally mirrored and rotated by a
right angle, of one of the photos in ``test/sql/data``, resized to 512x512 and encoded at JPEG
quality 90. The set is deterministic for a given ``(n, seed)``, so benchmark runs compare like
with like, and no two images are byte-identical (no cache or dedup can flatter a result).
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "test" / "sql" / "data"
SIZE = 512
QUALITY = 90
_ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
              Image.Transpose.ROTATE_270)


def fixture_images(folder: Path = FIXTURES) -> list[Image.Image]:
    files = sorted([*folder.glob("*.png"), *folder.glob("*.jpg")])
    if not files:
        raise FileNotFoundError(f"no .png/.jpg fixtures in {folder}")
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def make_jpegs(n: int, *, size: int | tuple[int, int] = SIZE, quality: int = QUALITY,
               seed: int = 0, grain: float = 0.0, folder: Path = FIXTURES) -> list[bytes]:
    """``n`` distinct JPEGs (bytes), deterministic for ``seed``.

    ``size``: a side (square images) or ``(width, height)``; a right-angle rotation turns
    the latter to portrait, as phones store half their photos. ``grain``: the standard
    deviation of the sensor-like noise added to every pixel, which gives an upscaled fixture
    the entropy (file size, decoding cost) of a real photo of that size.
    """
    out_w, out_h = (size, size) if isinstance(size, int) else size
    aspect = out_w / out_h
    sources = fixture_images(folder)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    field = (noise.normal(0.0, grain, (out_h, out_w, 3)).round().astype(np.int16)
             if grain else None)  # one field, shifted differently for every image
    out: list[bytes] = []
    seen: set[bytes] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise RuntimeError(f"could not make {n} distinct images")
        source = sources[len(out) % len(sources)]
        width, height = source.size
        crop_w = rng.uniform(0.55, 1.0) * min(width, height * aspect)
        crop_h = crop_w / aspect
        left = rng.uniform(0, width - crop_w)
        top = rng.uniform(0, height - crop_h)
        image = source.resize((out_w, out_h), Image.Resampling.BICUBIC,
                              box=(left, top, left + crop_w, top + crop_h))
        if field is not None:
            shift = (int(noise.integers(out_h)), int(noise.integers(out_w)))
            pixels = np.asarray(image, dtype=np.int16) + np.roll(field, shift, axis=(0, 1))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rotation = rng.choice(_ROTATIONS)
        if rotation is not None:
            image = image.transpose(rotation)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            continue
        seen.add(digest)
        out.append(data)
    return out


def encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_variants(folder: Path = FIXTURES) -> dict[str, bytes]:
    """Every committed photograph as shipped plus fixed variants of it, by name.

    The variants are what a collection of real photos varies by: a tighter center crop, the
    four corner crops, a mirror image, a half-size copy, and re-encodes at JPEG quality 60 and
    WebP quality 80. Deterministic: the same bytes on every run.
    """
    out: dict[str, bytes] = {}
    for path in sorted([*folder.glob("*.png"), *folder.glob("*.jpg")]):
        out[path.name] = path.read_bytes()
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        cw, ch = int(width * 0.7), int(height * 0.7)
        crops = {"center": ((width - cw) // 2, (height - ch) // 2),
                 "top-left": (0, 0), "top-right": (width - cw, 0),
                 "bottom-left": (0, height - ch), "bottom-right": (width - cw, height - ch)}
        for where, (left, top) in crops.items():
            crop = image.crop((left, top, left + cw, top + ch))
            out[f"{path.name}:crop-{where}"] = encode(crop, "PNG")
        out[f"{path.name}:mirror"] = encode(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                            "PNG")
        half = image.resize((width // 2, height // 2), Image.Resampling.LANCZOS)
        out[f"{path.name}:half"] = encode(half, "PNG")
        out[f"{path.name}:jpeg-q60"] = encode(image, "JPEG", quality=60)
        out[f"{path.name}:webp-q80"] = encode(image, "WEBP", quality=80)
    return out


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    jpegs = make_jpegs(count)
    print(f"{len(jpegs)} JPEGs, {sum(map(len, jpegs)) / len(jpegs) / 1024:.1f} KiB on average")

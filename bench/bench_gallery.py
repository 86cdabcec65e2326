"""The gallery at scale: page, facet, detail and thumbnail times at N stored images against a
small baseline store, measured in the same run.

Each store is written straight into LanceDB with the write-back schema: N stored images
(random unit embeddings of the model's dimension, labels drawn from the model's 1000 with a
skewed distribution, 10 runs, rank 1 and 2 predictions, a small real JPEG thumbnail each).
Requests go through the real ASGI app in-process (no sockets: this measures the gallery, not
the network). Prints the median of --requests repetitions per request kind, and big/baseline.

Usage: python -m bench.bench_gallery [--images 20000] [--baseline 1000] [--requests 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import lancedb
import numpy as np
import pyarrow as pa
from PIL import Image

from bench.timing import median_get_ms
from vgi_vision.gallery.app import make_app
from vgi_vision.gallery.catalog import Catalog
from vgi_vision.gallery.facts import FilePolicy
from vgi_vision.worker.lance.kinds import IMAGES, utc_now
from vgi_vision.worker.stored import image_schema
from vgi_vision.worker.vision.model import ModelInfo, models_root

BATCH = 5000


def thumbnail() -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "JPEG", quality=75)
    return out.getvalue()


async def build(folder: Path, n: int, info: ModelInfo) -> list[str]:
    """Write ``n`` stored images; returns their keys."""
    rng = np.random.default_rng(n)
    db = await lancedb.connect_async(str(folder))
    schema = image_schema(info.embedding_dim)
    images = await db.create_table(IMAGES, schema=schema)
    thumb, now = thumbnail(), utc_now()
    runs = [f"{i:032x}" for i in range(10)]
    keys: list[str] = []
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        batch_keys = [f"{i:064x}" for i in range(start, start + size)]
        keys += batch_keys
        idx = np.minimum(rng.zipf(1.3, size) - 1, 999)
        top1 = rng.uniform(0.05, 0.99, size)
        top2 = top1 * rng.uniform(0.05, 1.0, size)
        vectors = rng.normal(size=(size, info.embedding_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        run = [runs[i % len(runs)] for i in range(start, start + size)]
        columns: dict[str, Any] = {
            "image_key": batch_keys, "model": [info.name] * size, "path": [None] * size,
            "top_k": [2] * size,
            "idx": [[int(i), int(i + 1) % 1000] for i in idx],
            "label": [[info.labels[i], info.labels[(i + 1) % 1000]] for i in idx],
            "confidence": [[float(a), float(b)] for a, b in zip(top1, top2, strict=True)],
            "run_id": run, "created_at": [now] * size,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()),
                                                        info.embedding_dim),
            "thumbnail": [thumb] * size, "phash": [None] * size}
        await images.add(pa.table(columns, schema=schema))
    images.close()
    db.close()
    return keys


async def measure(folder: Path, keys: list[str], repeats: int) -> dict[str, float]:
    """Median milliseconds per request kind (and the snapshot load)."""
    started = time.perf_counter()
    catalog = await Catalog.open(str(folder), refresh_seconds=3600)
    await catalog.snapshot()
    times = {"snapshot load": (time.perf_counter() - started) * 1000}
    app = make_app(catalog, FilePolicy(None))
    middle = keys[len(keys) // 2]
    urls = {"grid, newest": "/", "grid, smallest margin": "/?order=margin",
            "grid, page 100": "/?page=100&per_page=10",
            "grid, label + confidence": "/?label=tench&min_confidence=0.3",
            "grid, search": "/?search=ca", "detail + neighbours": f"/image/{middle}",
            "thumbnail": f"/thumb/{middle}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as client:
        await client.get("/")  # compiles the templates once, outside the measurements
        for name, url in urls.items():
            times[name] = await median_get_ms(client, [url] * repeats)
    catalog.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args()
    info = ModelInfo.load(models_root() / "efficientnet-lite0")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as tmp:
        for n in (args.baseline, args.images):
            folder = Path(tmp) / f"store-{n}"
            started = time.perf_counter()
            keys = asyncio.run(build(folder, n, info))
            print(f"built a store of {n} images in {time.perf_counter() - started:.1f} s")
            results[n] = asyncio.run(measure(folder, keys, args.requests))
    small, big = results[args.baseline], results[args.images]
    print(f"\n| request | {args.baseline:,} images | {args.images:,} images | ratio |")
    print("|---|---|---|---|")
    for name in small:
        print(f"| {name} | {small[name]:.0f} ms | {big[name]:.0f} ms | "
              f"{big[name] / small[name]:.1f}x |")


if __name__ == "__main__":
    main()

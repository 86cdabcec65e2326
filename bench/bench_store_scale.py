"""A store at collection scale: similar() search latency and recall@10, index build time and
disk, gallery grid and detail latency and browse memory, on a synthetic store of N images.

The store is written straight into LanceDB once per run with the write-back schema (``images``
and ``paths``; not by classifying): N stored images, 90% by ``efficientnet-lite0`` and 10% by
a second model (so every search filters by model), 5 ranks each, one path per image plus a
copy's path for one in ten, a small real JPEG thumbnail. The embeddings are synthetic but
clustered like a photo collection's: 1,000 classes of 20 sub-clusters each, unit vectors
around them (random unit vectors would have no near neighbours to find at all). Queries are
held-out vectors drawn the same way; their exact top 10 within the model is computed with
numpy while the store is written, so recall@10 compares the search to exact search.

Measured in one run: the flat (exact) search before any index, the index build (seconds, and
the disk it adds), then the indexed search p50 and recall@10; then, in a child process so
that its peak RSS is the browser's alone, the gallery's first load, grid page and detail page
(with its 8 neighbours) p50 through the real ASGI app.

Usage: python -m bench.bench_store_scale [--images 100000] [--queries 50] [--flat-queries 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from PIL import Image

from bench.timing import median_get_ms
from vgi_vision.worker.lance.kinds import IMAGES, PATHS, utc_now
from vgi_vision.worker.lance.vector_index import build_index, nearest
from vgi_vision.worker.stored import image_schema, paths_schema
from vgi_vision.worker.vision.model import ModelInfo, models_root

DIM = 1280
BATCH = 20_000
CLASSES = 1_000
SUB_CLUSTERS = 20
MODEL = "efficientnet-lite0"
OTHER_MODEL = "efficientnet-lite0-int8"
K = 10


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class Embeddings:
    """Clustered unit vectors: class centre, sub-cluster around it, image around that."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        centres = unit(self.rng.normal(size=(CLASSES, DIM)).astype(np.float32))
        spread = self.rng.normal(size=(CLASSES * SUB_CLUSTERS, DIM)).astype(np.float32)
        self.sub = unit(np.repeat(centres, SUB_CLUSTERS, axis=0) + 0.8 * unit(spread))

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` vectors and their classes."""
        which = self.rng.integers(0, len(self.sub), n)
        noise = unit(self.rng.normal(size=(n, DIM)).astype(np.float32))
        return unit(self.sub[which] + 0.6 * noise).astype(np.float32), which // SUB_CLUSTERS


def thumbnail() -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "JPEG", quality=75)
    return out.getvalue()


class ExactTopK:
    """The running exact top ``K`` (cosine) of each query among the vectors seen so far."""

    def __init__(self, queries: np.ndarray) -> None:
        self.queries = queries
        self.scores = np.full((len(queries), K), -np.inf, np.float32)
        self.keys = np.full((len(queries), K), -1, np.int64)

    def see(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        """Take ``vectors`` (row numbers ``keys``) into account."""
        scores = np.concatenate([self.scores, self.queries @ vectors.T], axis=1)
        keys = np.concatenate([self.keys, np.broadcast_to(keys, (len(self.queries), len(keys)))],
                              axis=1)
        best = np.argsort(-scores, axis=1)[:, :K]
        self.scores = np.take_along_axis(scores, best, axis=1)
        self.keys = np.take_along_axis(keys, best, axis=1)


def key_of(i: int) -> str:
    return f"{i:064x}"


async def build(folder: Path, n: int, queries: np.ndarray, embeddings: Embeddings,
                labels: Sequence[str]) -> ExactTopK:
    db = await lancedb.connect_async(str(folder))
    schema = image_schema(DIM)
    images = await db.create_table(IMAGES, schema=schema)
    paths = await db.create_table(PATHS, schema=paths_schema())
    exact = ExactTopK(queries)
    thumb, now = thumbnail(), utc_now()
    rng = np.random.default_rng(n)
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        vectors, classes = embeddings.draw(size)
        models = np.where(rng.random(size) < 0.9, MODEL, OTHER_MODEL)
        mine = np.flatnonzero(models == MODEL)
        exact.see(vectors[mine], start + mine)
        keys = [key_of(start + i) for i in range(size)]
        top1 = rng.uniform(0.05, 0.99, size)
        ranks = [[int(c), *((int(c) + r) % CLASSES for r in range(1, 5))] for c in classes]
        confidences = [[float(p), *(float(p) / (r + 2) for r in range(4))] for p in top1]
        columns: dict[str, Any] = {
            "image_key": keys, "model": models.tolist(),
            "path": [f"/photos/{(start + i) % 997}/img_{start + i}.jpg" for i in range(size)],
            "top_k": [5] * size, "idx": ranks, "label": [[labels[i] for i in r] for r in ranks],
            "confidence": confidences, "run_id": [f"{(start + i) % 50:032x}" for i in range(size)],
            "created_at": [now] * size,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
            "thumbnail": [thumb] * size,
            "phash": pa.array(rng.integers(0, 2**63, size, dtype=np.int64).astype(np.uint64))}
        await images.add(pa.table(columns, schema=schema))
        copies = [i for i in range(size) if (start + i) % 10 == 0]
        path_rows = {"image_key": keys + [keys[i] for i in copies],
                     "path": columns["path"] + [f"/backup/copy_{start + i}.jpg" for i in copies],
                     "first_seen": [now] * (size + len(copies)),
                     "last_seen": [now] * (size + len(copies))}
        await paths.add(pa.table(path_rows, schema=paths_schema()))
        print(f"  {start + size:,} rows written", file=sys.stderr, flush=True)
    images.close()
    paths.close()
    db.close()
    return exact


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


async def search_ms(folder: Path, queries: np.ndarray) -> tuple[list[float], list[list[str]]]:
    db = await lancedb.connect_async(str(folder))
    images = await db.open_table(IMAGES)
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = await nearest(images, query.tolist(), K, MODEL, ["image_key"])
        times.append((time.perf_counter() - started) * 1000)
        found.append(hits.column("image_key").to_pylist())
    images.close()
    db.close()
    return times, found


async def index(folder: Path) -> float:
    db = await lancedb.connect_async(str(folder))
    images, paths = await db.open_table(IMAGES), await db.open_table(PATHS)
    started = time.perf_counter()
    await build_index(images, paths)
    seconds = time.perf_counter() - started
    images.close()
    paths.close()
    db.close()
    return seconds


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return statistics.mean(len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True))


def peak_rss_mb() -> float:
    """This process's peak RSS. Read from /proc (VmHWM): Linux's ``ru_maxrss`` carries the
    forking parent's peak across ``exec``, which would count the bench's own memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def gallery(folder: str, images: int, requests: int) -> None:
    """Child process: gallery latencies and this process's peak RSS, as JSON on stdout."""
    from urllib.parse import quote

    import httpx

    from vgi_vision.gallery.app import make_app
    from vgi_vision.gallery.catalog import Catalog
    from vgi_vision.gallery.facts import FilePolicy

    async def measure() -> dict[str, float]:
        started = time.perf_counter()
        catalog = await Catalog.open(folder, refresh_seconds=3600)
        await catalog.snapshot()
        times = {"first load": (time.perf_counter() - started) * 1000}
        app = make_app(catalog, FilePolicy(None))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as client:
            await client.get("/?per_page=1")  # compiles the templates, outside the timing
            labels = ModelInfo.load(models_root() / MODEL).labels
            kinds = {
                # Paging one filter (newest and uncertain first): its counts and facets are
                # computed by the first page and reused by the next ones.
                "grid page, paging": [f"/?page={page}&order={order}" for order in
                                      ("newest", "margin") for page in range(1, 2 * requests + 2)],
                # A new filter each time: counts, facets and page all computed.
                "grid page, new filter": [f"/?label={quote(labels[i * 37])}"
                                          for i in range(2 * requests + 1)],
                "detail page": [f"/image/{key_of(i * 997 % images)}"
                                for i in range(1, 2 * requests + 2)]}
            for name, urls in kinds.items():
                times[name] = await median_get_ms(client, urls)
        catalog.close()
        return times

    times = asyncio.run(measure())
    times["peak RSS MB"] = peak_rss_mb()
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--flat-queries", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--gallery-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gallery_child:
        gallery(args.gallery_child, args.images, args.requests)
        return
    labels = ModelInfo.load(models_root() / MODEL).labels
    embeddings = Embeddings(seed=7)
    queries, _ = embeddings.draw(args.queries)
    with tempfile.TemporaryDirectory(prefix="bench-store-scale-") as tmp:
        folder = Path(tmp) / "store"
        started = time.perf_counter()
        exact = asyncio.run(build(folder, args.images, queries, embeddings, labels))
        built = time.perf_counter() - started
        before = disk_bytes(folder)
        exact_keys = [[key_of(int(k)) for k in row] for row in exact.keys]
        flat_ms, flat_found = asyncio.run(search_ms(folder, queries[:args.flat_queries]))
        assert recall(flat_found, exact_keys[:args.flat_queries]) == 1.0, "flat is exact"
        index_s = asyncio.run(index(folder))
        after = disk_bytes(folder)
        indexed_ms, found = asyncio.run(search_ms(folder, queries))
        print(f"\n{args.images:,} images (built in {built:.0f} s, {before / 2**30:.2f} GiB)")
        print("| measure | value |\n|---|---|")
        print(f"| similar(), flat scan, p50 | {statistics.median(flat_ms):,.0f} ms |")
        print(f"| index build | {index_s:,.0f} s, +{(after - before) / 2**20:,.0f} MiB on disk |")
        print(f"| similar(), indexed, p50 / p95 | {statistics.median(indexed_ms):,.0f} ms / "
              f"{np.percentile(indexed_ms, 95):,.0f} ms |")
        print(f"| recall@10 against exact | {recall(found, exact_keys):.3f} |")
        print(f"| indexed vs flat p50 | "
              f"{statistics.median(indexed_ms) / statistics.median(flat_ms):.3f}x |", flush=True)
        child = subprocess.run([sys.executable, "-m", "bench.bench_store_scale",
                                "--gallery-child", str(folder), "--images", str(args.images),
                                "--requests", str(args.requests)],
                               capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"the gallery child failed:\n{child.stderr}")
        browse = json.loads(child.stdout)
    for name in ("first load", "grid page, paging", "grid page, new filter", "detail page"):
        print(f"| gallery {name}, p50 | {browse[name]:,.0f} ms |")
    print(f"| browse peak RSS | {browse['peak RSS MB']:,.0f} MB |")

if __name__ == "__main__":
    main()

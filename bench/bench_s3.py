"""Object storage against local disk, in the same run: classifying by URL, and committing.

A local S3-protocol server (moto, ``vgi_vision.testing.s3server``) runs in this process on
loopback; a private subprocess worker reaches it through the standard AWS variables.

* images/s: ``SELECT count(vision.top_label(path)) FROM photos`` over N distinct real
  512x512 JPEGs (``bench/images.py``), once with the paths of local files, once with the
  ``s3://`` URLs of the same bytes. Both run warm, alternating, best of ``--repeats``: the
  ratio is the cost of fetching (a tick's objects are fetched in parallel) over reading.
* commit latency: a run of 32 classified rows staged and committed through ``WriteBack``
  (merge into ``images``, run record, staged rows deleted), into a local folder and into an
  ``s3://`` store, alternating; median and worst of ``--commits`` each.

The S3 server here is a Python process on the same two cores as the worker, so the object
numbers are a floor: a real S3 endpoint serves from elsewhere.

Usage: python -m bench.bench_s3 [--images 512] [--repeats 3] [--commits 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import duckdb

import vgi_vision
from bench.images import make_jpegs
from vgi_vision.testing.s3server import LocalS3, local_s3
from vgi_vision.worker.lance.kinds import utc_now
from vgi_vision.worker.lance.writeback import WriteBack

BUCKET = "bench"
DIM = 1280
ROWS_PER_RUN = 32


def images_per_second(con: duckdb.DuckDBPyConnection, paths: list[str]) -> float:
    con.execute("CREATE OR REPLACE TABLE photos AS SELECT unnest(?) AS path", [paths])
    started = time.perf_counter()
    labelled = con.execute("SELECT count(vision.top_label(path)) FROM photos").fetchone()
    seconds = time.perf_counter() - started
    assert labelled == (len(paths),), labelled
    return len(paths) / seconds


def run_rows(run_id: str, first: int) -> list[dict]:
    """A run's staged rows as classify writes them (values synthetic: the store is timed)."""
    now = utc_now()
    return [{"image_key": f"{first + i:064x}", "model": "efficientnet-lite0",
             "path": f"{first + i}.jpg", "top_k": 5, "idx": [0, 1, 2, 3, 4],
             "label": ["a", "b", "c", "d", "e"], "confidence": [0.5, 0.2, 0.1, 0.1, 0.1],
             "run_id": run_id, "created_at": now, "vector": [0.1] * DIM,
             "thumbnail": b"jpeg", "input_row": i} for i in range(ROWS_PER_RUN)]


def commit_seconds(sink: WriteBack, run: int) -> float:
    run_id = uuid.uuid4().hex
    rows = run_rows(run_id, run * ROWS_PER_RUN)
    started = time.perf_counter()
    sink.write(run_id, rows)
    sink.finish(run_id, ROWS_PER_RUN)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--commits", type=int, default=20)
    args = parser.parse_args()
    with local_s3() as s3, tempfile.TemporaryDirectory() as folder:
        os.environ.update(s3.env())
        s3.create_bucket(BUCKET)
        local, urls = stage_images(s3, Path(folder), args.images)
        con = duckdb.connect()
        vgi_vision.attach(con)  # a private worker: reads any path or URL its user can
        try:
            images_per_second(con, local[:32])  # warm: model, worker, connections
            images_per_second(con, urls[:32])
            rates: dict[str, list[float]] = {"local": [], "s3": []}
            for _ in range(args.repeats):
                rates["local"].append(images_per_second(con, local))
                rates["s3"].append(images_per_second(con, urls))
        finally:
            vgi_vision.detach(con)
        latencies = commit_latencies(f"{folder}/store.lance", f"s3://{BUCKET}/store",
                                     args.commits)
    print(f"command: python -m bench.bench_s3 --images {args.images} --repeats {args.repeats} "
          f"--commits {args.commits}")
    best = {name: max(values) for name, values in rates.items()}
    print(f"top_label by path, {args.images} JPEGs: local {best['local']:.1f} img/s, "
          f"s3 {best['s3']:.1f} img/s, s3/local {best['s3'] / best['local']:.2f}x (aim >= 0.8x)")
    for name, values in latencies.items():
        print(f"commit of a {ROWS_PER_RUN}-row run, {name} store: median "
              f"{1000 * statistics.median(values):.0f} ms, worst {1000 * max(values):.0f} ms")
    ratio = statistics.median(latencies["s3"]) / statistics.median(latencies["local"])
    print(f"s3 commit / local commit (medians): {ratio:.1f}x")


def stage_images(s3: LocalS3, folder: Path, n: int) -> tuple[list[str], list[str]]:
    """The same JPEGs as local files and as objects: (paths, urls)."""
    local, urls = [], []
    for i, data in enumerate(make_jpegs(n)):
        path = folder / f"{i:04d}.jpg"
        path.write_bytes(data)
        local.append(str(path))
        urls.append(s3.put(BUCKET, f"photos/{i:04d}.jpg", data))
    return local, urls


def commit_latencies(local_uri: str, s3_uri: str, commits: int) -> dict[str, list[float]]:
    """Seconds per committed run into each store, the two alternating (maintenance off, so a
    compaction never lands in one store's timings only)."""
    sinks = {"local": WriteBack(local_uri, DIM, compact_every=0),
             "s3": WriteBack(s3_uri, DIM, compact_every=0)}
    try:
        for sink in sinks.values():
            commit_seconds(sink, 0)  # warm: tables opened, a first version written
        timings: dict[str, list[float]] = {name: [] for name in sinks}
        for run in range(1, commits + 1):
            for name, sink in sinks.items():
                timings[name].append(commit_seconds(sink, run))
    finally:
        for sink in sinks.values():
            sink.close()
    return timings


if __name__ == "__main__":
    main()

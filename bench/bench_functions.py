"""Throughput of embed, category_score, is_a, phash and image_info against top_label.

A worker is started on one transport and attached to DuckDB; each function is run over a table
of N distinct real 512x512 JPEGs (``bench/images.py``) as ``SELECT count(vision.f(image))``,
and its rate is divided by ``top_label``'s rate measured in the same rounds, so the ratio says
what a function costs next to plain classification on this machine at this moment; ``vs raw``
divides it by the model alone (a bare onnxruntime session on ready float tensors,
:mod:`bench.raw_baseline`), timed once per round. Every
query runs once untimed first; each number is the best of ``--repeats`` rounds, the queries of a
round run back to back. ``image_info`` reads headers only, so it is also timed in this process
(``read_info`` per image) and reported in microseconds per image.

Usage: python -m bench.bench_functions [--images 64] [--repeats 3] [--transport subprocess]
"""

from __future__ import annotations

import os
import shlex
import sys
import time

import duckdb
import pyarrow as pa

import vgi_vision
from bench.images import make_jpegs
from bench.raw_baseline import RawBaseline, decoded_pixels
from bench.timing import best_seconds, checked_throughput_options, throughput_options
from vgi_vision.testing.launch import TRANSPORTS, running_worker
from vgi_vision.worker.vision.facts import read_info

BASELINE = "top_label"
QUERIES = {
    BASELINE: "SELECT count(vision.top_label(image)) FROM photos",
    "embed": "SELECT count(vision.embed(image)) FROM photos",
    "category_score": "SELECT count(vision.category_score(image, 'dog')) FROM photos",
    "is_a": "SELECT count(vision.is_a(image, 'vehicle')) FROM photos",
    "phash": "SELECT count(vision.phash(image)) FROM photos",
    "image_info": "SELECT count(vision.image_info(image)) FROM photos",
}


def main(argv: list[str] | None = None) -> int:
    args = checked_throughput_options(throughput_options(__doc__, 64, TRANSPORTS), argv)
    images = make_jpegs(args.images)

    con = duckdb.connect()
    con.register("photos_arrow", pa.table({"image": pa.array(images, pa.binary())}))
    con.execute("CREATE TABLE photos AS SELECT image FROM photos_arrow")
    con.unregister("photos_arrow")

    def query(sql: str) -> None:
        (count,), = con.execute(sql).fetchall()
        if count != args.images:
            raise RuntimeError(f"{sql!r} gave {count} non-NULL values for {args.images} images")

    samples: dict[str, list[float]] = {name: [] for name in QUERIES}
    raw = RawBaseline.create(decoded_pixels(images))
    raw_times: list[float] = []
    with running_worker(args.transport) as worker:
        vgi_vision.attach(con, worker.location)
        try:
            for sql in QUERIES.values():  # warm-up, untimed
                query(sql)
            for _ in range(args.repeats):
                raw_times.append(raw.seconds())
                for name, sql in QUERIES.items():
                    started = time.perf_counter()
                    query(sql)
                    samples[name].append(time.perf_counter() - started)
        finally:
            vgi_vision.detach(con)
    con.close()
    in_process = best_seconds(lambda: [read_info(i) for i in images], args.repeats)

    rates = {name: args.images / min(times) for name, times in samples.items()}
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {command}")
    print(f"machine: {len(os.sched_getaffinity(0))} cores; {args.images} distinct 512x512 "
          f"JPEGs; transport {args.transport}; best of {args.repeats} rounds")
    raw_rate = args.images / min(raw_times)
    print(f"raw: {raw.describe()}: {raw_rate:.1f} images/s")
    print(f"{'function':<15} {'images/s':>9} {'vs top_label':>12} {'vs raw':>7}")
    for name, rate in rates.items():
        print(f"{name:<15} {rate:>9.1f} {rate / rates[BASELINE]:>11.2f}x "
              f"{rate / raw_rate:>6.2f}x")
    print(f"image_info in-process (read_info): {1e6 * in_process / args.images:.0f} us/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())

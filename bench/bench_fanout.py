"""One query fanned out over two workers, as a ratio to the same query through one.

Every comparison doubles the cores a query can use and nothing else, in the same run:

* ``http``: two HTTP workers pinned to core 0 and core 1 (``serve --cpus``, the same
  ``sched_setaffinity`` as ``taskset -c``: one onnxruntime thread each);
  ``attach(con, location=[a, b])`` against ``attach(con, location=a)``;
* ``unix``: the same with two unix-socket workers;
* ``private``: ``attach(con, workers=2)`` (two private workers, pinned the same way by the
  pool) against one private worker pinned to core 0;
* ``default``: ``attach(con)`` (one private worker on every core: the default) against
  ``attach(con, workers="auto")``, to show what the default leaves on the table (or not).

Queries over N distinct real 512x512 JPEGs (``bench/images.py``):

* scalar   ``SELECT count(vision.top_label(image)) FROM photos``
* lateral  ``SELECT count(*) FROM photos p, vision.classify(p.image) c``
* one      ``SELECT * FROM vision.classify('test/sql/data/coffee.png')``: one-image latency
  with warm workers (ratio = baseline seconds / fan-out seconds, so > 1 is faster here too).

Every query runs once untimed, then ``--repeats`` times alternating between the two sides; the
best time of each side counts (other processes on a shared machine only ever slow a run
down). The load average before and after is printed: on a busy machine ratios are noise.

Usage: python -m bench.bench_fanout [--images 256] [--repeats 3]
                                    [--groups http,unix,private,default]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

import vgi_vision
from bench.images import make_jpegs
from vgi_vision.client.locations import available_cores
from vgi_vision.testing.launch import RunningWorker, start_http, start_unix

REPO = Path(__file__).resolve().parent.parent

QUERIES = {
    "scalar": "SELECT count(vision.top_label(image)) FROM photos",
    "lateral": "SELECT count(*) FROM photos p, vision.classify(p.image) c",
    "one": "SELECT * FROM vision.classify('test/sql/data/coffee.png')",
}
GROUPS = ("http", "unix", "private", "default")


@contextlib.contextmanager
def pinned_pair(kind: str, folder: Path) -> Iterator[list[RunningWorker]]:
    """Two workers of ``kind``, on core 0 and core 1 (or the first two cores we may use)."""
    cores = available_cores()[:2]
    workers: list[RunningWorker] = []
    try:
        for i, core in enumerate(cores):
            flags = ["--cpus", str(core), "--data-root", str(REPO)]
            if kind == "http":
                workers.append(start_http(folder / f"http{i}.port", *flags))
            else:
                workers.append(start_unix(folder / f"unix{i}.sock", *flags))
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def attached(images: list[bytes], location, **options) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("rows", pa.table({"image": pa.array(images, pa.binary())}))
    con.execute("CREATE TABLE photos AS SELECT * FROM rows")
    con.unregister("rows")
    vgi_vision.attach(con, location, **options)
    return con


def timed(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    started = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - started


def compare(name: str, baseline: duckdb.DuckDBPyConnection, fanned: duckdb.DuckDBPyConnection,
            images: int, repeats: int) -> list[str]:
    lines = []
    for query, sql in QUERIES.items():
        timed(baseline, sql), timed(fanned, sql)  # warm: sessions, connections, pools
        base, fan = float("inf"), float("inf")
        one = query == "one"
        for _ in range(repeats * (5 if one else 1)):
            base = min(base, timed(baseline, sql))
            fan = min(fan, timed(fanned, sql))
        unit = (f"{base * 1000:8.1f} ms {fan * 1000:8.1f} ms" if one
                else f"{images / base:8.1f}/s  {images / fan:8.1f}/s ")
        lines.append(f"{name:<8} {query:<8} {unit} {base / fan:6.2f}x")
        print(lines[-1], flush=True)
    return lines


def run(images: list[bytes], repeats: int, groups: list[str]) -> list[str]:
    lines = []
    n = len(images)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for group in groups:
            if group in ("http", "unix"):
                with pinned_pair(group, folder) as (a, b):
                    one = attached(images, a.location)
                    two = attached(images, [a.location, b.location])
                    lines += compare(group, one, two, n, repeats)
            elif group == "private":
                core = str(available_cores()[0])
                one = attached(images, None, cpus=core)
                two = attached(images, None, workers=2)
                lines += compare(group, one, two, n, repeats)
            else:
                one = attached(images, None)
                two = attached(images, None, workers="auto")
                lines += compare(group, one, two, n, repeats)
            for con in (one, two):
                vgi_vision.detach(con)
                con.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", default=",".join(GROUPS))
    args = parser.parse_args()
    groups = [g for g in args.groups.split(",") if g]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {GROUPS}")
    print(f"{args.images} JPEGs, best of {args.repeats}, cores {available_cores()}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'group':<8} {'query':<8} {'one worker':>12} {'two workers':>12} {'ratio':>7}")
    run(make_jpegs(args.images), args.repeats, groups)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

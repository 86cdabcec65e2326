"""The vision functions inside Ray Data and Daft, as ratios to the same work through DuckDB.

One run, the same N distinct real 512x512 JPEGs (``bench/images.py``) everywhere, scalar
``top_label`` over every image:

* ``in-process``: the engine's 2 single-CPU workers each load the model (one onnxruntime
  thread each), against ``attach(con, workers=2)`` (two private workers pinned to one core
  each) running ``SELECT count(vision.top_label(image)) FROM photos``;
* ``remote``: the engine's workers call two HTTP workers pinned to core 0 and core 1, against
  ``attach(con, location=[a, b])`` on the same two workers.

Engines start actors and load models per job, so a job's time is start-up plus steady state.
Ray: each batch is stamped with its start and end in the actor; the steady rate counts the
images of batches started once every actor has finished its first one (its model loaded), and
start-up is the time to that point. Daft: the whole set is timed right after a small query
(``--small`` images) and the steady rate is (N - small) / (t_N - t_small); start-up is the
first small query's time. DuckDB sides run once untimed, then are timed on the whole set.
Best of ``--repeats`` everywhere (another process on a shared machine only ever slows a run
down). Peak RSS: the largest sum of the engine's worker processes seen while a job ran.

Usage: python -m bench.bench_distributed [--images 512] [--small 16] [--repeats 2]
                                         [--engines ray,daft] [--modes in-process,remote]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import vgi_vision
from bench.images import make_jpegs
from vgi_vision.testing.launch import RunningWorker, start_http

QUERY = "SELECT count(vision.top_label(image)) FROM photos"
#: Rows per engine batch (and per Ray block, so both actors get work from the start).
BATCH = 32


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def engine_pids(marker: bytes) -> list[int]:
    """Processes whose command line starts with ``marker`` (Ray sets actor titles)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "cmdline").read_bytes().startswith(marker):
                    pids.append(int(proc.name))
    return pids


@contextlib.contextmanager
def peak_rss(pids: Callable[[], list[int]]) -> Iterator[list[int]]:
    """The largest summed RSS (KB) of ``pids()`` seen every 0.2 s while the block runs."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], sum(rss_kb(pid) for pid in pids()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def best(seconds: Callable[[], float], repeats: int) -> float:
    return min(seconds() for _ in range(repeats))


def duckdb_seconds(table: pa.Table, repeats: int, **attach: Any) -> float:
    con = duckdb.connect()
    vgi_vision.attach(con, **attach)
    try:
        con.register("photos", table)
        con.execute(QUERY).fetchall()  # warm: workers started, models loaded

        def run() -> float:
            started = time.perf_counter()
            assert con.execute(QUERY).fetchone() == (table.num_rows,)
            return time.perf_counter() - started

        return best(run, repeats)
    finally:
        vgi_vision.detach(con)


class TimedVisionBatch:
    """``VisionBatch`` that stamps each output row with its batch's start and end times."""

    def __init__(self, function: str, image_column: str, **options: Any) -> None:
        from vgi_vision.ray import VisionBatch

        self.inner = VisionBatch(function, image_column, **options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.time()
        out = self.inner(batch).select(["top_label"])
        ended = time.time()
        return out.append_column("started", pa.array([started] * out.num_rows)) \
            .append_column("ended", pa.array([ended] * out.num_rows)) \
            .append_column("pid", pa.array([os.getpid()] * out.num_rows))


def ray_steady(table: pa.Table, options: dict[str, object]) -> tuple[float, float]:
    """(steady images/s, start-up s): the rate between the end of each actor's first batch
    (its model loaded) and the last batch's end, and the time to that first end."""
    import ray

    blocks = [table.slice(start, BATCH) for start in range(0, table.num_rows, BATCH)]
    started = time.time()
    rows = pa.Table.from_pylist(ray.data.from_arrow(blocks).map_batches(
        TimedVisionBatch, fn_constructor_kwargs={"function": "top_label",
                                                 "image_column": "image", **options},
        concurrency=2, num_cpus=1, batch_format="pyarrow", batch_size=BATCH).take_all())
    assert rows.num_rows == table.num_rows
    stamps = rows.select(["pid", "started", "ended"]).to_pylist()
    first_end: dict[int, float] = {}
    for stamp in stamps:
        first_end[stamp["pid"]] = min(stamp["ended"], first_end.get(stamp["pid"], math.inf))
    window_start = max(first_end.values())  # every actor has loaded its model
    images = sum(1 for stamp in stamps if stamp["started"] >= window_start)
    window = max(stamp["ended"] for stamp in stamps) - window_start
    return images / window, window_start - started


def daft_steady(table: pa.Table, options: dict[str, object], small: int
                ) -> tuple[float, float]:
    """(steady images/s, start-up s) of Daft: the whole set against a small query run just
    before it; start-up is the first small query's time (UDF processes started, models
    loaded, ``--small`` images classified)."""
    import daft

    from vgi_vision.daft import udf

    top_label = udf("top_label", cpus=1, max_concurrency=2, batch_size=BATCH, **options)

    def job(rows: pa.Table) -> float:
        started = time.perf_counter()
        df = daft.from_arrow(rows)
        # Selected and fetched: a count alone lets Daft leave the UDF column uncomputed.
        labels = df.select(top_label(df["image"]).alias("label")).to_arrow()
        assert labels.column("label").null_count == 0 and labels.num_rows == rows.num_rows
        return time.perf_counter() - started

    cold = job(table.slice(0, small))
    warm = job(table.slice(0, small))
    full = job(table)
    return (table.num_rows - small) / max(full - warm, 1e-9), cold


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Daft runs UDF instances in processes of their own)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(proc.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def engine_rates(engine: str, table: pa.Table, small: int, repeats: int,
                 options: dict[str, object]) -> tuple[float, float, int]:
    """(steady images/s, start-up seconds, peak RSS KB) of one engine configuration, the
    best of ``repeats`` jobs."""
    if engine == "ray":
        def workers() -> list[int]:
            return engine_pids(b"ray::MapWorker")

        def job() -> tuple[float, float]:
            return ray_steady(table, options)
    else:
        already = set(descendants(os.getpid()))  # ray's daemons, HTTP workers

        def workers() -> list[int]:
            return [pid for pid in descendants(os.getpid()) if pid not in already]

        def job() -> tuple[float, float]:
            return daft_steady(table, options, small)
    with peak_rss(workers) as peak:
        runs = [job() for _ in range(repeats)]
    return max(r[0] for r in runs), min(r[1] for r in runs), peak[0]


@contextlib.contextmanager
def pinned_http_workers(folder: Path) -> Iterator[list[RunningWorker]]:
    workers = [start_http(folder / f"port{core}", "--cpus", str(core),
                          log_file=folder / f"worker{core}.log") for core in (0, 1)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--small", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engines", default="ray,daft")
    parser.add_argument("--modes", default="in-process,remote")
    args = parser.parse_args()
    engines, modes = args.engines.split(","), args.modes.split(",")
    table = pa.table({"image": pa.array(make_jpegs(args.images), pa.binary())})
    print(f"{args.images} distinct 512x512 JPEGs; load average {os.getloadavg()[0]:.2f}")
    if "ray" in engines:
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        print(f"ray.init: {time.perf_counter() - started:.1f} s")
    print("| engine | mode | images/s steady | vs DuckDB | start-up s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for mode in modes:
            with contextlib.ExitStack() as stack:
                options: dict[str, object] = {}
                if mode == "remote":
                    http = stack.enter_context(pinned_http_workers(Path(scratch)))
                    locations = [w.location for w in http]
                    options = {"location": locations}
                    baseline = duckdb_seconds(table, args.repeats, location=locations)
                else:
                    baseline = duckdb_seconds(table, args.repeats, workers=2)
                duck_rate = table.num_rows / baseline
                print(f"| duckdb | {mode} | {duck_rate:.0f} | 1.00x | | |")
                for engine in engines:
                    rate, startup, peak = engine_rates(engine, table, args.small,
                                                       args.repeats, options)
                    print(f"| {engine} | {mode} | {rate:.0f} | {rate / duck_rate:.2f}x "
                          f"| {startup:.1f} | {peak / 1024:.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

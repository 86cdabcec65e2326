"""SQL throughput per transport, as a ratio to in-process inference on the same images.

For each transport (subprocess, unix, http) a worker is started, attached to DuckDB, and two
queries are timed over a table of N distinct real 512x512 JPEGs (see ``bench/images.py``):

* scalar   ``SELECT count(vision.top_label(image)) FROM photos``
* lateral  ``SELECT count(*) FROM photos p, vision.classify(p.image) c``

The reference is the inference layer in this process,
``load_classifier().classify(images, top_k=5)``, on the same images in the same run.

Fairness on a small, noisy machine (the worker and this process share the cores):

* nothing is timed cold: the classifier and every (transport, query) run once first;
* the in-process baseline is measured between the SQL measurements (before each round of
  queries and once at the end), never while a query runs: the worker is idle then, and this
  process is idle (the classifier's threads sleep) while a query runs;
* every number is the best of ``--repeats`` runs, and the baseline is the best of all its
  runs, so a ratio is never flattered by a slow baseline;
* a short pause before each timed run lets the other side's spinning threads go to sleep.

Columns: images/s (best), ratio to the baseline, worker round trips per query, the share of
the query's wall time spent waiting for the worker, and CPU seconds used per query by this
process (DuckDB + client) and by the worker.

Usage: python bench/bench_sql.py [--images 256] [--repeats 5] [--transports subprocess,unix,http]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Workers are started as ``python -m vgi_vision``: make the package importable for them too,
# whatever the current directory is.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

import vgi_vision  # noqa: E402
from bench.images import make_jpegs  # noqa: E402
from vgi_vision.launch import TRANSPORTS, running_worker  # noqa: E402
from vgi_vision.model import load_classifier  # noqa: E402

QUERIES = {
    "top_label": "SELECT count(vision.top_label(image)) FROM photos",
    "classify": "SELECT count(*) FROM photos p, vision.classify(p.image) c",
}
TOP_K = 5  # vision.classify's default, and what the baseline asks for
SETTLE_SECONDS = 0.2
_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Sample:
    seconds: float
    requests: int = 0
    wait: float = 0.0
    client_cpu: float = 0.0
    worker_cpu: float = 0.0


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    @property
    def best(self) -> Sample:
        return min(self.samples, key=lambda s: s.seconds)

    def rate(self, images: int) -> float:
        return images / self.best.seconds


class TimedTransport:
    """Counts the time the client spends inside worker round trips."""

    def __init__(self, transport) -> None:
        self.inner = transport
        self.wait = 0.0

    def roundtrip(self, request: bytes) -> bytes:
        started = time.perf_counter()
        try:
            return self.inner.roundtrip(request)
        finally:
            self.wait += time.perf_counter() - started

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def settle() -> None:
    time.sleep(SETTLE_SECONDS)


def measure_baseline(images: list[bytes]) -> Sample:
    classifier = load_classifier()
    settle()
    cpu = own_cpu()
    started = time.perf_counter()
    results = classifier.classify(images, top_k=TOP_K)
    seconds = time.perf_counter() - started
    if sum(r is not None for r in results) != len(images):
        raise RuntimeError("the in-process classifier could not decode every image")
    return Sample(seconds, client_cpu=own_cpu() - cpu)


def measure_query(con: duckdb.DuckDBPyConnection, attachment, timed: TimedTransport,
                  worker_pid: Callable[[], int | None], sql: str, expected: int) -> Sample:
    settle()
    requests, wait = attachment.client.requests, timed.wait
    pid = worker_pid()
    cpu, worker = own_cpu(), process_cpu(pid)
    started = time.perf_counter()
    (count,), = con.sql(sql).fetchall()
    seconds = time.perf_counter() - started
    if count != expected:
        raise RuntimeError(f"{sql!r} counted {count} rows, expected {expected}")
    return Sample(seconds, attachment.client.requests - requests, timed.wait - wait,
                  own_cpu() - cpu, process_cpu(pid) - worker)


def run(n_images: int, repeats: int, transports: list[str], log: Callable[[str], None]
        ) -> tuple[Series, dict[tuple[str, str], Series]]:
    started = time.perf_counter()
    images = make_jpegs(n_images)
    log(f"{n_images} distinct 512x512 JPEGs, {sum(map(len, images)) / n_images / 1024:.1f} "
        f"KiB on average, built in {time.perf_counter() - started:.1f}s")
    expected = {"top_label": n_images, "classify": n_images * TOP_K}

    con = duckdb.connect()
    photos = pa.table({"id": pa.array(range(n_images), pa.int32()),
                       "image": pa.array(images, pa.binary())})
    con.register("photos_arrow", photos)
    con.execute("CREATE TABLE photos AS SELECT id, image FROM photos_arrow")
    con.unregister("photos_arrow")

    baseline = Series()
    classifier = load_classifier()
    classifier.warm_up()
    classifier.classify(images, top_k=TOP_K)  # warm: session, decode pool, allocator
    baseline.samples.append(measure_baseline(images))
    log(f"in-process: {n_images / baseline.samples[-1].seconds:.1f} images/s")

    results: dict[tuple[str, str], Series] = {}
    for transport in transports:
        t0 = time.perf_counter()
        with running_worker(transport) as worker:
            attachment = vgi_vision.attach(con, worker.location)
            timed = TimedTransport(attachment.client.transport)
            attachment.client.transport = timed
            if worker.process is not None:
                worker_pid = lambda: worker.process.pid  # noqa: E731
            else:
                worker_pid = lambda: timed.inner.pid  # noqa: E731 - spawned on first call
            try:
                for name, sql in QUERIES.items():  # warm-up, untimed
                    measure_query(con, attachment, timed, worker_pid, sql, expected[name])
                for _ in range(repeats):
                    baseline.samples.append(measure_baseline(images))
                    for name, sql in QUERIES.items():
                        sample = measure_query(con, attachment, timed, worker_pid, sql,
                                               expected[name])
                        results.setdefault((transport, name), Series()).samples.append(sample)
            finally:
                vgi_vision.detach(con)
        rates = ", ".join(f"{q} {results[(transport, q)].rate(n_images):.1f}" for q in QUERIES)
        log(f"{transport}: {rates} images/s (best of {repeats}; "
            f"{time.perf_counter() - t0:.1f}s)")
    baseline.samples.append(measure_baseline(images))
    con.close()
    return baseline, results


def report(n_images: int, repeats: int, baseline: Series, results: dict[tuple[str, str], Series],
           command: str) -> str:
    base_rate = baseline.rate(n_images)
    all_rates = ", ".join(f"{n_images / s.seconds:.0f}" for s in baseline.samples)
    lines = [
        f"command:  {command}",
        f"machine:  {len(os.sched_getaffinity(0))} cores; duckdb {duckdb.__version__}, "
        f"pyarrow {pa.__version__}",
        f"images:   {n_images} distinct real 512x512 JPEGs (quality 90); best of {repeats}",
        f"baseline: in-process load_classifier().classify(images, top_k={TOP_K}) = "
        f"{base_rate:.1f} images/s (best of {len(baseline.samples)}: {all_rates}; "
        f"{baseline.best.client_cpu:.2f} CPU s)",
        "",
        f"{'transport':<11} {'query':<10} {'images/s':>9} {'ratio':>6} {'median':>7} "
        f"{'trips':>5} {'wait%':>6} {'clientCPU':>9} {'workerCPU':>9}",
    ]
    failures = 0
    for (transport, query), series in results.items():
        best = series.best
        rate = series.rate(n_images)
        ratio = rate / base_rate
        failures += ratio < 0.7
        seconds = sorted(s.seconds for s in series.samples)
        median = n_images / seconds[len(seconds) // 2]
        lines.append(f"{transport:<11} {query:<10} {rate:>9.1f} {ratio:>5.2f}x {median:>7.1f} "
                     f"{best.requests:>5} {100 * best.wait / best.seconds:>5.0f}% "
                     f"{best.client_cpu:>9.2f} {best.worker_cpu:>9.2f}")
    lines += ["", f"target: every ratio >= 0.70x; "
                  f"{'all met' if not failures else f'{failures} below target'}",
              "ratio = best images/s / best in-process images/s; median = median images/s; "
              "trips = worker round trips per query; wait% = share of wall time the client "
              "waited on the worker; CPU = seconds per query in this process / the worker"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="number of images (256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per query (5)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        help=f"comma-separated subset of {','.join(TRANSPORTS)}")
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = sorted(set(transports) - set(TRANSPORTS))
    if unknown or not transports:
        parser.error(f"unknown transports {unknown}; choose from {','.join(TRANSPORTS)}")
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    baseline, results = run(args.images, args.repeats, transports, log)
    print(report(args.images, args.repeats, baseline, results, command))
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

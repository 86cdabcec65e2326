"""A bounded load test on loopback: many clients, a mix of good and hostile requests, one worker.

N client threads (default 16), each with its own Client, hammer one worker for D seconds
(default 60) with a seeded mix of operations:

* ``image_classes``  a full scan (16 continuations over HTTP): exactly idx 0..999 and the labels;
* ``classify``       1-4 fixture photos (``test/sql/data``) with top_k 1..10: every row must match
                     the probabilities this process computes for the same photo;
* ``top_label``      photos mixed with NULL, garbage and truncated bytes: the label or NULL;
* ``hostile``        garbage and truncated images mixed with a photo (rows only for the photo),
                     a bad top_k, a path argument (refused: the worker has no data root) --
                     each must give its structured error or no rows, never a wrong row.

Every result is checked; the run fails (exit 1) on any wrong result, unexpected error, or if
the worker process died or was replaced. The worker's resident memory is sampled from
``/proc/PID/status`` every second to show whether it stays flat. Only 127.0.0.1 is contacted,
and every loop is bounded in both time and count.

Usage: python -m bench.load_test [--clients 16] [--seconds 60] [--transports http,unix]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.testing.launch import RunningWorker, running_worker
from vgi_vision.worker.vision.model import load_classifier

REPO = Path(__file__).resolve().parent.parent

FIXTURES = REPO / "test" / "sql" / "data"
#: Returned and expected probabilities may differ this much (batching changes float rounding).
TOLERANCE = 1e-3
#: Upper bound on operations per client, whatever --seconds says.
MAX_OPS_PER_CLIENT = 1_000_000


class WrongResult(AssertionError):
    """A response that is not what the request must produce."""


@dataclass(frozen=True)
class Expected:
    """What the model says about each fixture photo, computed once in this process."""

    photos: dict[str, bytes]
    probabilities: dict[str, np.ndarray]  # name -> the 1000 class probabilities
    labels: tuple[str, ...]
    wnids: tuple[str | None, ...]

    @classmethod
    def compute(cls) -> Expected:
        classifier = load_classifier()
        photos = {p.name: p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.is_file()}
        probabilities = {}
        for name, data in photos.items():
            result = classifier.classify([data], top_k=1000)[0]
            if result is None:
                raise RuntimeError(f"fixture {name} did not decode")
            full = np.zeros(1000)
            full[result.indices] = result.probabilities
            probabilities[name] = full
        return cls(photos, probabilities, classifier.info.labels, classifier.info.wnids)

    def check_rows(self, name: str, rows: list[dict], top_k: int) -> None:
        """``rows`` are the top_k classes of photo ``name``, up to near-ties swapping."""
        expected = np.sort(self.probabilities[name])[::-1][:top_k]
        if [r["rank"] for r in rows] != list(range(1, top_k + 1)):
            raise WrongResult(f"{name}: ranks {[r['rank'] for r in rows]} for top_k {top_k}")
        for row, want in zip(rows, expected, strict=True):
            got = self.probabilities[name][row["idx"]]
            if abs(got - want) > TOLERANCE or abs(row["confidence"] - got) > TOLERANCE \
                    or row["label"] != self.labels[row["idx"]]:
                raise WrongResult(f"{name}: rank {row['rank']} is {row}, expected a class "
                                  f"with probability {want:.4f}")

    def top_label(self, name: str) -> str:
        return self.labels[int(np.argmax(self.probabilities[name]))]


def garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 4096))


def truncated(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randint(1, len(data) // 3)]


def op_image_classes(client: Client, rng: random.Random, want: Expected) -> None:
    table = client.table("image_classes")
    if table.column("idx").to_pylist() != list(range(1000)) \
            or tuple(table.column("label").to_pylist()) != want.labels \
            or tuple(table.column("wnid").to_pylist()) != want.wnids:
        raise WrongResult(f"image_classes: {table.num_rows} rows, not the 1000 classes in order")


def op_classify(client: Client, rng: random.Random, want: Expected) -> None:
    names = rng.choices(list(want.photos), k=rng.randint(1, 4))
    top_k = rng.randint(1, 10)
    table = client.table("classify", pa.array([want.photos[n] for n in names], pa.binary()),
                         pa.array([top_k] * len(names), pa.int32()))
    by_row: dict[int, list[dict]] = {}
    for row in table.to_pylist():
        by_row.setdefault(row["input_row"], []).append(row)
    if sorted(by_row) != list(range(len(names))):
        raise WrongResult(f"classify: rows for inputs {sorted(by_row)} of {len(names)}")
    for i, name in enumerate(names):
        want.check_rows(name, by_row[i], top_k)


def op_top_label(client: Client, rng: random.Random, want: Expected) -> None:
    names = rng.choices(list(want.photos) + [None, "garbage", "truncated"], k=rng.randint(1, 8))
    images = [None if n is None else garbage(rng) if n == "garbage"
              else truncated(rng, want.photos["coffee.png"]) if n == "truncated"
              else want.photos[n] for n in names]
    got = client.call("top_label", pa.array(images, pa.binary())).to_pylist()
    expected = [want.top_label(n) if n in want.photos else None for n in names]
    if got != expected:
        raise WrongResult(f"top_label of {names}: {got}, expected {expected}")


def op_hostile(client: Client, rng: random.Random, want: Expected) -> None:
    case = rng.choice(["mixed", "bad_top_k", "path"])
    if case == "mixed":
        name = rng.choice(list(want.photos))
        images = [garbage(rng), truncated(rng, want.photos[name]), b"", None,
                  want.photos[name]]
        rng.shuffle(images)
        table = client.table("classify", pa.array(images, pa.binary()))
        good = images.index(want.photos[name])
        rows = table.to_pylist()
        if {r["input_row"] for r in rows} != {good}:
            raise WrongResult(f"hostile classify: rows for {sorted({r['input_row'] for r in rows})}"
                              f", only input {good} is an image")
        want.check_rows(name, rows, 5)
        return
    args: tuple[pa.Array, ...]
    if case == "bad_top_k":
        args = (pa.array([want.photos["cat.png"]], pa.binary()),
                pa.array([rng.choice([0, -1, 1001, 2**31 - 1])], pa.int32()))
        kind, text = "invalid_argument", "top_k must be between 1 and 1000"
    else:
        args = (pa.array(["test/sql/data/coffee.png"]),)
        kind, text = "path_refused", "path arguments are disabled"
    try:
        client.table("classify", *args)
    except WorkerError as exc:
        if exc.kind != kind or text not in str(exc):
            raise WrongResult(f"hostile {case}: {exc.kind}: {exc}") from None
        return
    raise WrongResult(f"hostile {case}: no error")


OPERATIONS: dict[str, tuple[float, Callable[[Client, random.Random, Expected], None]]] = {
    "image_classes": (0.2, op_image_classes),
    "classify": (0.4, op_classify),
    "top_label": (0.2, op_top_label),
    "hostile": (0.2, op_hostile),
}


@dataclass
class Tally:
    """Everything the clients observed, merged under a lock."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: str, seconds: float, requests: int) -> None:
        with self.lock:
            self.latencies.setdefault(op, []).append(seconds)
            self.requests += requests

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)


def run_client(location: str, seed: int, deadline: float, want: Expected, tally: Tally) -> None:
    rng = random.Random(seed)
    names = list(OPERATIONS)
    weights = [OPERATIONS[n][0] for n in names]
    with Client(location) as client:
        for _ in range(MAX_OPS_PER_CLIENT):
            if time.monotonic() >= deadline:
                return
            op = rng.choices(names, weights)[0]
            before = client.requests
            started = time.perf_counter()
            try:
                OPERATIONS[op][1](client, rng, want)
            except Exception as exc:  # every failure is reported, not raised
                tally.fail(f"client {seed} {op}: {type(exc).__name__}: {exc}")
                continue
            tally.add(op, time.perf_counter() - started, client.requests - before)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def sample_rss(pid: int, stop: threading.Event, samples: list[int]) -> None:
    while not stop.wait(1.0):
        value = rss_kib(pid)
        if value is not None:
            samples.append(value)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000 if values else float("nan")


def load(worker: RunningWorker, transport: str, clients: int, seconds: float,
         want: Expected) -> bool:
    process = worker.process
    assert process is not None  # socket and HTTP workers are launched here
    with Client(worker.location) as probe:
        pid = probe.request({"op": "describe"})[0]["worker"]["pid"]
    if pid != process.pid:
        raise RuntimeError(f"worker reports pid {pid}, launched {process.pid}")
    samples: list[int] = [rss_kib(pid) or 0]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pid, stop, samples), daemon=True)
    sampler.start()
    tally = Tally()
    started = time.monotonic()
    threads = [threading.Thread(target=run_client,
                                args=(worker.location, seed, started + seconds, want, tally))
               for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 600)
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    samples.append(rss_kib(pid) or 0)
    alive = process.poll() is None
    with Client(worker.location) as probe:
        same = probe.request({"op": "describe"})[0]["worker"]["pid"] == pid if alive else False

    everything = [s for values in tally.latencies.values() for s in values]
    ops = Counter({op: len(values) for op, values in tally.latencies.items()})
    print(f"\n== {transport}: {clients} clients for {elapsed:.1f} s ==")
    print(f"requests: {tally.requests} ({tally.requests / elapsed:.1f}/s), operations: "
          f"{sum(ops.values())} ({sum(ops.values()) / elapsed:.1f}/s)")
    print(f"operation latency: p50 {percentile(everything, 50):.1f} ms, "
          f"p99 {percentile(everything, 99):.1f} ms")
    for op in OPERATIONS:
        values = tally.latencies.get(op, [])
        print(f"  {op:<14} {len(values):>6} ok   p50 {percentile(values, 50):7.1f} ms   "
              f"p99 {percentile(values, 99):7.1f} ms")
    print(f"wrong results / unexpected errors: {len(tally.failures)}")
    for message in tally.failures[:10]:
        print(f"  {message}")
    print(f"worker pid {pid}: {'alive' if alive else 'DEAD'}, "
          f"{'same process' if same else 'NOT the same process'}")
    print(f"worker RSS (MiB): first {samples[0] / 1024:.1f}, last {samples[-1] / 1024:.1f}, "
          f"max {max(samples) / 1024:.1f} ({len(samples)} samples, one a second)")
    tenths = [samples[min(len(samples) - 1, round(i * (len(samples) - 1) / 10))]
              for i in range(11)]
    print("  at every tenth of the run: " + " ".join(f"{v / 1024:.0f}" for v in tenths))
    return not tally.failures and alive and same and all(not t.is_alive() for t in threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--transports", default="http",
                        help="comma-separated: http, unix (each gets its own worker and run)")
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not set(transports) <= {"http", "unix"} or not transports:
        parser.error("--transports takes http and/or unix")
    want = Expected.compute()
    ok = True
    for transport in transports:
        with tempfile.TemporaryDirectory() as folder, \
                running_worker(transport, workdir=Path(folder)) as worker:
            ok &= load(worker, transport, args.clients, args.seconds, want)
    print("\nPASS" if ok else "\nFAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Where each image's time goes in ``SELECT count(vision.top_label(image))``, stage by stage.

Over N distinct real 512x512 JPEGs (``bench/images.py``), in one run:

1. **Stages, in this process**, each timed alone over all N images, as the worker runs them for
   one request holding every row: the request's Arrow IPC decode, Arrow to Python sources,
   read + decode + resize/crop on as many threads as the worker has lanes, stacking the
   decoded pixels into the uint8 batch, the classifier's onnxruntime runs (uint8 in,
   normalization folded into the graph, one run per lane at once), softmax + top-k, and the
   result's encoding (labels to Arrow, the response message). Their sum is what a worker
   doing one stage after the other would cost; ``Classifier.classify`` (each lane decoding
   its images and running the model on them, the lanes at once) and ``Dispatcher.handle``
   (the whole request, bytes in, bytes out) are timed too.
2. **SQL, per transport** (subprocess, unix, http): the query's wall time, split into the
   time the client had at least one request in flight (``round trips``) and the rest
   (DuckDB, the binding, the client: ``client``); the requests sent are then replayed into a
   dispatcher in this process (``worker``, one after the other), and ``transport`` is
   round trips minus worker: framing, copies, the other process's scheduling, queueing.

The baseline is :class:`bench.raw_baseline.RawBaseline`: the bare model on ready float
tensors (the worker's cores and per-run batch, the fastest of three ways to run it), measured
between the other measurements; every ``vs raw`` divides by the best baseline of the same
phase. Each number is the best of ``--repeats`` runs after a warm-up.

Usage: python -m bench.bench_profile [--images 256] [--repeats 3]
                                     [--transports subprocess,unix,http]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

import vgi_vision
from bench import timing
from bench.images import make_jpegs
from bench.raw_baseline import SETTLE_SECONDS, RawBaseline, decoded_pixels
from vgi_vision.protocol import decode, encode
from vgi_vision.testing.launch import TRANSPORTS, running_worker
from vgi_vision.transports.inprocess import InProcessTransport
from vgi_vision.worker.vision.imaging import decode_image
from vgi_vision.worker.vision.model import load_classifier, softmax, top_k_indices

SQL = "SELECT count(vision.top_label(image)) FROM photos"


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest run, each after the pause that lets onnxruntime's threads go to sleep."""
    return timing.best_seconds(fn, repeats, SETTLE_SECONDS)


class RecordingTransport:
    """Wraps a client's transport: keeps every request and the intervals it was in flight."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests: list[bytes] = []
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def roundtrip(self, request: bytes) -> bytes:
        started = time.perf_counter()
        try:
            return self.inner.roundtrip(request)
        finally:
            with self._lock:
                self.requests.append(request)
                self.intervals.append((started, time.perf_counter()))

    def reset(self) -> None:
        with self._lock:
            self.requests, self.intervals = [], []

    def in_flight(self) -> float:
        """Seconds during which at least one request was in flight (the union of intervals)."""
        total, reach = 0.0, float("-inf")
        for start, stop in sorted(self.intervals):
            if stop > reach:
                total += stop - max(start, reach)
                reach = stop
        return total

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@dataclass
class TransportRun:
    transport: str
    wall: float
    in_flight: float
    worker: float
    requests: int
    raw_rate: float


@dataclass
class Profile:
    n: int
    raw: RawBaseline
    stages: dict[str, float] = field(default_factory=dict)  # seconds for all n images
    together: dict[str, float] = field(default_factory=dict)
    raw_rate: float = 0.0
    raw_stage: float = 0.0  # seconds of the raw baseline for all n images, among the stages
    runs: list[TransportRun] = field(default_factory=list)


def model_runs(classifier, pixels: np.ndarray) -> None:
    """The onnxruntime runs ``Classifier.run`` makes, on ready uint8 pixels, nothing else:
    runs of ``run_batch`` images, one per core at once, as on the classifier's lanes."""
    info, session, step = classifier.info, classifier.session, classifier.run_batch
    names = [n for n in (info.logits_output, info.embedding_output) if n]
    feed = session.get_inputs()[0].name
    with ThreadPoolExecutor(max_workers=classifier.threads) as lanes:
        list(lanes.map(lambda start: session.run(names, {feed: pixels[start:start + step]}),
                       range(0, len(pixels), step)))


def profile_stages(jpegs: list[bytes], raw: RawBaseline, repeats: int) -> Profile:
    classifier = load_classifier()
    classifier.warm_up()
    info = classifier.info
    profile = Profile(len(jpegs), raw)
    args = pa.record_batch({"image": pa.array(jpegs, pa.binary())})
    request = encode({"op": "call", "function": "top_label"}, args)
    message = decode(request)
    assert message.batch is not None
    sources = message.batch.column(0).to_pylist()
    with ThreadPoolExecutor(max_workers=classifier.threads) as pool:
        decoded = [d for d in pool.map(lambda s: decode_image(s, classifier.limits, info.prep),
                                       sources) if d is not None]
        if len(decoded) != len(sources):
            raise RuntimeError("a benchmark image did not decode")
        uint8 = np.stack([d.pixels for d in decoded])
        profile.stages["request decode (Arrow IPC)"] = best_seconds(
            lambda: decode(request), repeats)
        profile.stages["Arrow -> Python sources"] = best_seconds(
            lambda: message.batch.column(0).to_pylist(), repeats)  # type: ignore[union-attr]
        profile.stages["read + decode + resize/crop (pool)"] = best_seconds(
            lambda: list(pool.map(lambda s: decode_image(s, classifier.limits, info.prep),
                                  sources)), repeats)
    batch = classifier.batch_size
    profile.stages["stack into the uint8 batch"] = best_seconds(
        lambda: [np.stack([d.pixels for d in decoded[i:i + batch]])
                 for i in range(0, len(decoded), batch)], repeats)
    profile.stages["model runs (uint8 in, normalized in graph)"] = best_seconds(
        lambda: model_runs(classifier, uint8), repeats)
    profile.raw_stage = min(raw.seconds() for _ in range(repeats))
    logits = np.random.default_rng(0).standard_normal((len(jpegs), info.num_classes),
                                                      dtype=np.float32)
    profile.stages["softmax + top-k"] = best_seconds(
        lambda: top_k_indices(softmax(logits), 1), repeats)
    labels = [info.labels[i % info.num_classes] for i in range(len(jpegs))]
    profile.stages["result encode (Arrow + message)"] = best_seconds(
        lambda: encode({"ok": True}, pa.record_batch({"label": pa.array(labels,
                                                                         pa.string())})),
        repeats)
    profile.together["Classifier.classify (overlapped)"] = best_seconds(
        lambda: classifier.classify(sources, top_k=1), repeats)
    worker = InProcessTransport.start(warm_up=True)
    try:
        worker.roundtrip(request)
        profile.together["Dispatcher.handle (whole request)"] = best_seconds(
            lambda: worker.roundtrip(request), repeats)
    finally:
        worker.close()
    return profile


def profile_transport(con: duckdb.DuckDBPyConnection, transport: str, profile: Profile,
                      replay: InProcessTransport, repeats: int) -> TransportRun:
    with running_worker(transport) as worker:
        attachment = vgi_vision.attach(con, worker.location)
        member = attachment.client.pool.members[0]
        recording = RecordingTransport(member.transport)
        member.transport = recording
        try:
            con.sql(SQL).fetchall()  # warm-up
            best: tuple[float, float, list[bytes]] | None = None
            raw_rates = [profile.raw.rate(1)]
            for _ in range(repeats):
                time.sleep(SETTLE_SECONDS)
                recording.reset()
                started = time.perf_counter()
                (count,), = con.sql(SQL).fetchall()
                wall = time.perf_counter() - started
                if count != profile.n:
                    raise RuntimeError(f"top_label counted {count}, expected {profile.n}")
                if best is None or wall < best[0]:
                    best = (wall, recording.in_flight(), list(recording.requests))
                raw_rates.append(profile.raw.rate(1))
        finally:
            vgi_vision.detach(con)
    assert best is not None
    wall, in_flight, requests = best
    handled = best_seconds(lambda: [replay.roundtrip(r) for r in requests], repeats)
    return TransportRun(transport, wall, in_flight, handled, len(requests), max(raw_rates))


def report(profile: Profile, command: str) -> str:
    n = profile.n
    raw_seconds = profile.raw_stage  # the stages' reference, measured among them

    def row(name: str, seconds: float, note: str = "") -> str:
        return (f"{name:<40} {1e3 * seconds / n:>8.2f} {n / seconds:>9.0f} "
                f"{seconds / raw_seconds:>7.2f}  {note}")

    lines = [f"command:  {command}",
             f"images:   {n} distinct 512x512 JPEGs (q90); best of the runs, after a warm-up",
             f"baseline: {profile.raw.describe()}: {profile.raw_rate:.1f} images/s best "
             f"(after the stages)",
             "",
             "stages, in this process, one request of every row (ms/img: per image; "
             "x raw: stage time / raw model time)",
             f"{'stage':<40} {'ms/img':>8} {'images/s':>9} {'x raw':>7}"]
    lines.append(row("(raw baseline: onnxruntime, float in)", raw_seconds, "not in the sum"))
    lines += [row(name, s) for name, s in profile.stages.items()]
    serial = sum(profile.stages.values())
    lines.append(row("sum (one stage after the other)", serial,
                     f"-> {raw_seconds / serial:.2f}x of raw"))
    for name, seconds in profile.together.items():
        lines.append(row(name, seconds, f"-> {raw_seconds / seconds:.2f}x of raw"))
    lines += ["", "SQL per transport (ms per image; vs raw: query rate / raw rate of the "
              "same phase)",
              f"{'transport':<11} {'images/s':>9} {'vs raw':>7} {'trips':>5} {'total':>7} "
              f"{'client':>7} {'trips':>7} {'worker':>7} {'transport':>9}"]
    for run in profile.runs:
        rate = n / run.wall
        per = 1e3 / n
        lines.append(f"{run.transport:<11} {rate:>9.1f} {rate / run.raw_rate:>6.2f}x "
                     f"{run.requests:>5} {per * run.wall:>7.2f} "
                     f"{per * (run.wall - run.in_flight):>7.2f} {per * run.in_flight:>7.2f} "
                     f"{per * run.worker:>7.2f} {per * (run.in_flight - run.worker):>9.2f}")
    lines += ["", "total: query wall time; client: outside round trips (DuckDB, binding, "
              "client); trips: at least one request in flight; worker: the same requests "
              "replayed into a dispatcher in this process, one after the other; transport: "
              "trips - worker (negative when requests in flight overlapped)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs (256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs each (3)")
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        help=f"comma-separated subset of {','.join(TRANSPORTS)}")
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not transports or set(transports) - set(TRANSPORTS):
        parser.error(f"--transports: choose from {','.join(TRANSPORTS)}")
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")
    command = shlex.join([sys.executable, *sys.argv])
    jpegs = make_jpegs(args.images)
    raw = RawBaseline.create(decoded_pixels(jpegs))
    profile = profile_stages(jpegs, raw, args.repeats)
    profile.raw_rate = raw.rate(args.repeats)

    con = duckdb.connect()
    con.register("photos_arrow", pa.table({"image": pa.array(jpegs, pa.binary())}))
    con.execute("CREATE TABLE photos AS SELECT image FROM photos_arrow")
    con.unregister("photos_arrow")
    replay = InProcessTransport.start(warm_up=True)
    try:
        for transport in transports:
            profile.runs.append(profile_transport(con, transport, profile, replay,
                                                  args.repeats))
            print(f"{transport}: {args.images / profile.runs[-1].wall:.1f} images/s",
                  file=sys.stderr, flush=True)
    finally:
        replay.close()
        con.close()
    print(report(profile, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

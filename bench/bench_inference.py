"""In-process inference throughput: the whole decode + infer path as a ratio to the model alone.

Two measurements on the same N distinct real 512x512 JPEGs (``bench/images.py``: crops of the
committed fixtures in ``test/sql/data``, mirrored / rotated, JPEG quality 90):

(a) ceiling  ``Classifier.run`` on pre-decoded ``N x 224 x 224 x 3`` uint8 arrays, in batches of
             B: the onnxruntime session (normalization folded into its graph) + softmax /
             L2 norm. No decoding.
(b) full     ``Classifier.classify`` on the encoded JPEG bytes with ``batch_size=B``: read +
             decode + resize/crop (on the classifier's lanes, beside its runs) +
             everything in (a) + top-k.

Both use one ``Classifier`` per batch size, created and warmed up before anything is timed; each
number is images/s of the best of ``--repeats`` runs (the median is shown too). The ratio
column is (b) / (a) at the same batch size, both measured in this run. The aim is
(b) >= 0.7 x (a) at batch 32. Both are also divided by the raw model (``vs raw``: a bare
onnxruntime session on ready float tensors, :mod:`bench.raw_baseline`), timed in the same
rounds.

Usage: python -m bench.bench_inference [--images 64] [--repeats 7] [--batch-sizes 1,32]
                                       [--threads T]
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.images import make_jpegs
from bench.raw_baseline import RawBaseline
from bench.timing import timed_runs
from vgi_vision.worker.vision.model import (
    DEFAULT_MODEL,
    Classifier,
    ModelInfo,
    default_threads,
    models_root,
)

TOP_K = 5
#: Idle time before each timed run, so onnxruntime's spinning worker threads (left over from
#: the previous run) have gone to sleep and do not steal the cores the next run needs.
SETTLE_SECONDS = 0.1


def machine_cpu() -> float | None:
    """CPU seconds used by every process on the machine so far (Linux), else None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    busy = sum(values[:8]) - values[3] - values[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls to ``fn``."""
    return timed_runs(fn, repeats, SETTLE_SECONDS)


def ceiling(classifier: Classifier, pixels: np.ndarray) -> None:
    """(a): the model on ready uint8 pixels, ``classifier.batch_size`` images per run."""
    step = classifier.batch_size
    for start in range(0, len(pixels), step):
        classifier.run(pixels[start:start + step])


def full_path(classifier: Classifier, jpegs: list[bytes]) -> None:
    """(b): encoded bytes in, top-k predictions out."""
    results = classifier.classify(jpegs, top_k=TOP_K)
    if any(r is None for r in results):
        raise RuntimeError("a benchmark image failed to decode")


def decode_only(pool: ThreadPoolExecutor, classifier: Classifier, jpegs: list[bytes]) -> None:
    """Just decoding, on as many threads as the classifier has lanes: the work (b) does
    beyond (a)."""
    list(pool.map(classifier.decode, jpegs))


def decoded_or_fail(classifier: Classifier, jpeg: bytes) -> np.ndarray:
    pixels = classifier.decode(jpeg)
    if pixels is None:
        raise RuntimeError("a generated JPEG did not decode")
    return pixels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs (default 64)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per cell (default 7)")
    parser.add_argument("--batch-sizes", default="1,32",
                        help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="Classifier threads (default: usable cores)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--images, --repeats and --threads must be >= 1")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes: not a list of integers: {args.batch_sizes!r}")
    if not batch_sizes or min(batch_sizes) < 1:
        parser.error("--batch-sizes must be integers >= 1")

    print("command:", shlex.join([sys.executable, *sys.argv]))
    import onnxruntime
    import PIL

    threads = args.threads or default_threads()
    print(f"cores usable: {default_threads()}, classifier threads: {threads}, "
          f"onnxruntime {onnxruntime.__version__}, pillow {PIL.__version__}")

    jpegs = make_jpegs(args.images)
    info = ModelInfo.load(models_root() / DEFAULT_MODEL)
    print(f"{len(jpegs)} distinct 512x512 JPEGs (q90), "
          f"{sum(map(len, jpegs)) / len(jpegs) / 1024:.1f} KiB average; model {info.name}")

    classifiers = {b: Classifier(info, batch_size=b, threads=threads) for b in batch_sizes}
    first = classifiers[batch_sizes[0]]
    pixels = np.stack([decoded_or_fail(first, j) for j in jpegs])
    raw = RawBaseline.create(pixels, threads=threads)

    # Warm-up: session creation, onnxruntime's first-run allocations, the lanes' threads.
    for classifier in classifiers.values():
        classifier.warm_up()
        ceiling(classifier, pixels)
        full_path(classifier, jpegs)

    machine_start, own_start, wall_start = machine_cpu(), own_cpu(), time.perf_counter()
    # Round-robin over every cell, so that a burst of activity elsewhere on the machine hits
    # all of them alike instead of one whole column.
    a_times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    b_times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    raw_times: list[float] = []
    for _ in range(args.repeats):
        raw_times.append(raw.seconds())
        for b, classifier in classifiers.items():
            a_times[b] += timed(functools.partial(ceiling, classifier, pixels), 1)
            b_times[b] += timed(functools.partial(full_path, classifier, jpegs), 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        decode_only(pool, first, jpegs)
        decode_times = timed(lambda: decode_only(pool, first, jpegs), args.repeats)

    others = None
    machine_end = machine_cpu()
    if machine_start is not None and machine_end is not None:
        wall = time.perf_counter() - wall_start
        others = max(0.0, (machine_end - machine_start - (own_cpu() - own_start)) / wall)
    n = len(jpegs)
    print()
    raw_best = n / min(raw_times)
    print(f"raw: {raw.describe()}: {raw_best:.1f} img/s (median "
          f"{n / statistics.median(raw_times):.1f})")
    print(f"{'batch':>5}  {'(a) model img/s':>16} {'median':>8} {'vs raw':>7}  "
          f"{'(b) full img/s':>15} {'median':>8} {'vs raw':>7}  {'(b)/(a)':>7}")
    for b in batch_sizes:
        a_best, b_best = n / min(a_times[b]), n / min(b_times[b])
        a_med, b_med = n / statistics.median(a_times[b]), n / statistics.median(b_times[b])
        print(f"{b:>5}  {a_best:>16.1f} {a_med:>8.1f} {a_best / raw_best:>6.2f}x  "
              f"{b_best:>15.1f} {b_med:>8.1f} {b_best / raw_best:>6.2f}x  "
              f"{b_best / a_best:>6.2f}x")
    print(f"decode only (read + decode + resize/crop on {threads} threads): "
          f"{n / min(decode_times):.1f} img/s")
    if others is not None:
        print(f"other processes used {others:.2f} of {os.cpu_count()} cores during the timed "
              f"runs" + (" -- the machine was busy: numbers are noisy, rerun when idle"
                         if others > 0.2 else ""))
    print()
    print("(a) = Classifier.run on pre-decoded uint8 arrays (onnxruntime, normalizing in its "
          "graph, + softmax);")
    print("(b) = Classifier.classify on the JPEG bytes (decode + resize/crop + (a) + top-k);")
    print(f"images/s of the best of {args.repeats} runs over {n} images; aim: (b)/(a) >= 0.70 "
          f"at batch 32")
    return 0


if __name__ == "__main__":
    sys.exit(main())

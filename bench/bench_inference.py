"""In-process inference throughput: the whole decode + infer path as a ratio to the model alone.

Two measurements on the same N distinct real 512x512 JPEGs (``bench/images.py``: crops of the
committed fixtures in ``test/sql/data``, mirrored / rotated, JPEG quality 90):

(a) ceiling  ``Classifier.run`` on pre-decoded ``N x 224 x 224 x 3`` uint8 arrays, in batches of
             B: input normalization + the onnxruntime session + softmax / L2 norm. No decoding.
(b) full     ``Classifier.classify`` on the encoded JPEG bytes with ``batch_size=B``: read +
             decode + resize/crop (on the decode pool) + everything in (a) + top-k.

Both use one ``Classifier`` per batch size, created and warmed up before anything is timed; each
number is images/s of the best of ``--repeats`` runs (the median is shown too). The ratio
column is (b) / (a) at the same batch size, both measured in this run. The aim is
(b) >= 0.7 x (a) at batch 32.

Usage: python bench/bench_inference.py [--images 64] [--repeats 3] [--batch-sizes 1,32]
                                       [--threads T]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.images import make_jpegs  # noqa: E402
from vgi_vision.model import (  # noqa: E402
    DEFAULT_MODEL, Classifier, ModelInfo, default_threads, models_root)

TOP_K = 5
#: Idle time before each timed run, so onnxruntime's spinning worker threads (left over from
#: the previous run) have gone to sleep and do not steal the cores the next run needs.
SETTLE_SECONDS = 0.1


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls to ``fn``."""
    seconds = []
    for _ in range(repeats):
        time.sleep(SETTLE_SECONDS)
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (default 3)")
    parser.add_argument("--batch-sizes", default="1,32",
                        help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="Classifier threads (default: usable cores)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

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
    pixels = np.stack([first.decode(j) for j in jpegs])

    # Warm-up: session creation, onnxruntime's first-run allocations, the decode pool's threads.
    for classifier in classifiers.values():
        classifier.warm_up()
        ceiling(classifier, pixels)
        full_path(classifier, jpegs)

    rows = []
    for b in batch_sizes:
        classifier = classifiers[b]
        # Interleave (a) and (b) so that drift in machine speed hits both alike.
        a_times: list[float] = []
        b_times: list[float] = []
        for _ in range(args.repeats):
            a_times += timed(lambda: ceiling(classifier, pixels), 1)
            b_times += timed(lambda: full_path(classifier, jpegs), 1)
        rows.append((b, a_times, b_times))

    n = len(jpegs)
    print()
    print(f"{'batch':>5}  {'(a) model img/s':>16} {'median':>8}  "
          f"{'(b) full img/s':>15} {'median':>8}  {'(b)/(a)':>7}")
    for b, a_times, b_times in rows:
        a_best, b_best = n / min(a_times), n / min(b_times)
        a_med, b_med = n / statistics.median(a_times), n / statistics.median(b_times)
        print(f"{b:>5}  {a_best:>16.1f} {a_med:>8.1f}  {b_best:>15.1f} {b_med:>8.1f}  "
              f"{b_best / a_best:>6.2f}x")
    print()
    print("(a) = Classifier.run on pre-decoded uint8 arrays (normalize + onnxruntime + softmax);")
    print("(b) = Classifier.classify on the JPEG bytes (decode + resize/crop + (a) + top-k);")
    print(f"images/s of the best of {args.repeats} runs over {n} images; aim: (b)/(a) >= 0.70 "
          f"at batch 32")
    return 0


if __name__ == "__main__":
    sys.exit(main())

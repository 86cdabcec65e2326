"""Phone-size photos: classification as a ratio to decoding them, the ceiling for big JPEGs.

N distinct 4000x3000 JPEGs (``bench.images.make_jpegs`` at that size, quality 90, with sensor-like
grain so they weigh what a phone's do) are timed,
in one run, round-robin so that load elsewhere hits every column alike:

* ``draft decode``  what no path can beat: libjpeg decoding at 1/8 scale in draft mode
  (``Image.draft`` + ``load``), nothing else, on a pool of the worker's size;
* ``decode_image``  the worker's decode: draft decode + centre crop + resize, model-ready;
* ``classify``      ``Classifier.classify(top_k=1)``: the above overlapped with the model;
* ``SQL``           ``SELECT count(vision.top_label(image))`` on a ``--transport`` worker;
* ``raw model``     a bare onnxruntime session on ready float tensors
  (:mod:`bench.raw_baseline`).

Decoding and the model share the same cores, so the attainable rate is one image's decode and
model time added up: ``decode + model`` = 1 / (1 / draft decode + 1 / raw model), shown as a
second ceiling. Each number is images/s of the best of ``--repeats``.

Usage: python -m bench.bench_phone [--images 24] [--repeats 3] [--transport subprocess]
"""

from __future__ import annotations

import io
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa
from PIL import Image

import vgi_vision
from bench.images import make_jpegs
from bench.raw_baseline import SETTLE_SECONDS, RawBaseline, decoded_pixels
from bench.timing import checked_throughput_options, throughput_options
from vgi_vision.testing.launch import TRANSPORTS, running_worker
from vgi_vision.worker.vision.imaging import decode_image
from vgi_vision.worker.vision.model import load_classifier

WIDTH, HEIGHT = 4000, 3000
#: Noise that gives the upscaled fixtures a phone photo's file size (~2-4 MB at q90).
GRAIN = 4.0


def draft_decode(data: bytes, shorter_side: int) -> tuple[int, int]:
    """Decode at the smallest JPEG scale that keeps ``shorter_side`` pixels: nothing else."""
    with Image.open(io.BytesIO(data)) as image:
        scale = shorter_side / min(image.size)
        image.draft("RGB", (int(image.width * scale), int(image.height * scale)))
        image.load()
        return image.size


def main(argv: list[str] | None = None) -> int:
    args = checked_throughput_options(throughput_options(__doc__, 24, TRANSPORTS), argv)
    command = shlex.join([sys.executable, *sys.argv])
    photos = make_jpegs(args.images, size=(WIDTH, HEIGHT), grain=GRAIN)
    classifier = load_classifier()
    classifier.warm_up()
    prep = classifier.info.prep
    raw = RawBaseline.create(np.repeat(decoded_pixels(photos[:8]),
                                       -(-args.images // 8), axis=0)[:args.images])
    con = duckdb.connect()
    con.register("photos_arrow", pa.table({"image": pa.array(photos, pa.binary())}))
    con.execute("CREATE TABLE photos AS SELECT image FROM photos_arrow")
    con.unregister("photos_arrow")

    def classify() -> None:
        if any(r is None for r in classifier.classify(photos, top_k=1)):
            raise RuntimeError("a phone photo did not decode")

    def query() -> None:
        (count,), = con.sql("SELECT count(vision.top_label(image)) FROM photos").fetchall()
        if count != args.images:
            raise RuntimeError(f"top_label gave {count} labels for {args.images} photos")

    times: dict[str, list[float]] = {}
    with ThreadPoolExecutor(max_workers=classifier.threads) as pool, \
            running_worker(args.transport) as worker:
        vgi_vision.attach(con, worker.location)
        cells: dict[str, Callable[[], object]] = {
            "draft decode": lambda: list(pool.map(
                lambda p: draft_decode(p, prep.resize_shorter_side), photos)),
            "decode_image": lambda: list(pool.map(
                lambda p: decode_image(p, classifier.limits, prep), photos)),
            "classify": classify,
            "SQL top_label": query,
        }
        try:
            for cell in cells.values():  # warm-up
                cell()
            for _ in range(args.repeats):
                for name, cell in cells.items():
                    time.sleep(SETTLE_SECONDS)
                    started = time.perf_counter()
                    cell()
                    times.setdefault(name, []).append(time.perf_counter() - started)
                times.setdefault("raw model", []).append(raw.seconds())  # its fastest way
        finally:
            vgi_vision.detach(con)
    con.close()

    n = args.images
    rates = {name: n / min(seconds) for name, seconds in times.items()}
    decode = rates["draft decode"]
    bound = 1 / (1 / decode + 1 / rates["raw model"])
    print(f"command: {command}")
    print(f"{n} distinct {WIDTH}x{HEIGHT} JPEGs (q90), "
          f"{sum(map(len, photos)) / n / 2**20:.2f} MiB on average; {classifier.threads} "
          f"threads; best of {args.repeats} rounds; SQL over {args.transport}")
    print(f"{'path':<16} {'images/s':>9} {'vs decode':>9} {'vs decode + model':>17}")
    for name, rate in [*rates.items(), ("decode + model", bound)]:
        print(f"{name:<16} {rate:>9.1f} {rate / decode:>8.2f}x {rate / bound:>16.2f}x")
    print("draft decode: libjpeg at 1/8 scale only; decode + model: 1 / (1/draft decode + "
          "1/raw model), what decoding and the model cost together on the same cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())

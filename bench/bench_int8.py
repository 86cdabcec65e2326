"""int8 against fp32 EfficientNet-Lite0: full-path throughput and agreement, in one run.

Throughput: ``Classifier.classify`` on N distinct real 512x512 JPEGs (``bench/images.py``,
seed 3: none of them is a calibration image), so each number includes read + decode +
resize/crop + normalization + onnxruntime + softmax + top-5. The two models alternate run by
run so a burst of load elsewhere hits both alike; each is images/s of the best of
``--repeats`` runs (the median too), and the ratio is int8 / fp32 from this run.

Each model is also timed bare (``raw``: a plain onnxruntime session on ready float tensors,
:mod:`bench.raw_baseline`), and through SQL: ``SELECT count(vision.top_label(image))`` over the
same images on a worker of each model (``--transport``, subprocess by default), the two
alternating query by query; int8 must keep its lead there too.

Agreement: every committed photograph and fixed variants of each (crops, mirror, half size,
JPEG and WebP re-encodes: ``bench.images.photo_variants``), plus ``--generated`` random crops
(seed 7): top-1 agreement with fp32, mean top-5 overlap, and for the committed photographs
whether the expected class is in int8's top 3.

Usage: python -m bench.bench_int8 [--images 64] [--repeats 5] [--generated 64]
                                  [--transport subprocess]
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import sys
import time

import duckdb
import pyarrow as pa

import vgi_vision
from bench.images import FIXTURES, make_jpegs, photo_variants
from bench.raw_baseline import RawBaseline, decoded_pixels
from vgi_vision.testing.launch import TRANSPORTS, running_worker
from vgi_vision.worker.vision.model import (
    Classification,
    Classifier,
    default_threads,
    load_classifier,
)

FP32, INT8 = "efficientnet-lite0", "efficientnet-lite0-int8"
TOP_K = 5
#: What the committed photographs show (the expected class must be in the top 3).
EXPECTED = {
    "cat.png": {"tabby cat", "tiger cat", "Egyptian Mau"},
    "coffee.png": {"espresso"},
    "grace_hopper.jpg": {"military uniform", "academic gown", "graduation cap"},
    "rocket.jpg": {"missile", "missile (projectile)"},
}


def throughput(models: dict[str, Classifier], jpegs: list[bytes], repeats: int
               ) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, classifier in models.items():
            time.sleep(0.1)  # let the other session's spinning threads go idle
            start = time.perf_counter()
            results = classifier.classify(jpegs, top_k=TOP_K)
            seconds[name].append(time.perf_counter() - start)
            if any(r is None for r in results):
                raise RuntimeError("a benchmark image failed to decode")
    return seconds


def sql_throughput(jpegs: list[bytes], transport: str, repeats: int
                   ) -> dict[str, list[float]]:
    """Seconds of ``top_label`` over ``jpegs`` through SQL, per model, alternating."""
    con = duckdb.connect()
    con.register("photos_arrow", pa.table({"image": pa.array(jpegs, pa.binary())}))
    con.execute("CREATE TABLE photos AS SELECT image FROM photos_arrow")
    con.unregister("photos_arrow")
    seconds: dict[str, list[float]] = {FP32: [], INT8: []}
    with contextlib.ExitStack() as stack:
        for name in seconds:
            worker = stack.enter_context(running_worker(transport, "--model", name))
            options = {"model": name} if worker.location is None else {}
            vgi_vision.attach(con, worker.location, name=name.replace("-", "_"), **options)
        queries = {name: f"SELECT count({name.replace('-', '_')}.top_label(image)) FROM photos"
                   for name in seconds}
        for sql in queries.values():
            con.sql(sql).fetchall()  # warm-up
        for _ in range(repeats):
            for name, sql in queries.items():
                time.sleep(0.1)
                start = time.perf_counter()
                (count,), = con.sql(sql).fetchall()
                seconds[name].append(time.perf_counter() - start)
                if count != len(jpegs):
                    raise RuntimeError(f"{name}: top_label gave {count} of {len(jpegs)}")
        for name in seconds:
            vgi_vision.detach(con, name.replace("-", "_"))
    con.close()
    return seconds


def agreement(fp32: list[Classification | None], int8: list[Classification | None]
              ) -> tuple[int, float]:
    same = overlap = 0
    for a, b in zip(fp32, int8, strict=True):
        if a is None or b is None:
            raise RuntimeError("an agreement image failed to decode")
        same += int(a.indices[0] == b.indices[0])
        overlap += len(set(a.indices.tolist()) & set(b.indices.tolist()))
    return same, overlap / (TOP_K * len(fp32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="JPEGs timed (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs each (default 5)")
    parser.add_argument("--generated", type=int, default=64,
                        help="extra random crops for the agreement check (default 64)")
    parser.add_argument("--transport", default="subprocess", choices=TRANSPORTS,
                        help="transport of the SQL measurement (default subprocess)")
    args = parser.parse_args(argv)
    if min(args.images, args.repeats) < 1 or args.generated < 0:
        parser.error("--images and --repeats must be >= 1, --generated >= 0")
    import onnxruntime

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"onnxruntime {onnxruntime.__version__}, cores usable: {default_threads()}")
    models = {FP32: load_classifier(FP32), INT8: load_classifier(INT8)}
    for classifier in models.values():
        classifier.warm_up()

    variants = photo_variants(FIXTURES)
    generated = make_jpegs(args.generated, seed=7) if args.generated else []
    sets = {"committed photographs": [variants[name] for name in sorted(EXPECTED)],
            "their variants (crops, mirror, half, re-encodes)":
                [v for k, v in variants.items() if ":" in k],
            f"random crops/flips/rotations (bench/images.py seed 7, {len(generated)})":
                generated}
    print("\nagreement with fp32")
    print(f"{'images':<60} {'n':>4} {'top-1 same':>11} {'top-5 overlap':>14}")
    total_n = total_same = 0
    total_overlap = 0.0
    for label, images in sets.items():
        if not images:
            continue
        same, overlap = agreement(models[FP32].classify(images, TOP_K),
                                  models[INT8].classify(images, TOP_K))
        total_n, total_same = total_n + len(images), total_same + same
        total_overlap += overlap * len(images)
        print(f"{label:<60} {len(images):>4} {same / len(images):>10.1%} {overlap:>13.1%}")
    print(f"{'all':<60} {total_n:>4} {total_same / total_n:>10.1%} "
          f"{total_overlap / total_n:>13.1%}")

    print("\nexpected class in the top 3 (committed photographs)")
    for name, wanted in sorted(EXPECTED.items()):
        row = []
        for model_name, classifier in models.items():
            result = classifier.classify([variants[name]], 3)[0]
            assert result is not None
            top3 = [classifier.info.labels[i] for i in result.indices]
            row.append(f"{model_name}: {'yes' if wanted & set(top3) else 'NO '} {top3}")
        print(f"  {name:<17} " + " | ".join(row))

    jpegs = make_jpegs(args.images, seed=3)
    pixels = decoded_pixels(jpegs)
    raws = {name: RawBaseline.create(pixels, name) for name in models}
    throughput(models, jpegs[:8], 1)  # warm the lanes and onnxruntime buffers
    raw_seconds: dict[str, list[float]] = {name: [] for name in models}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):  # raw and full path alternate, so load hits both alike
        for name, raw in raws.items():
            raw_seconds[name].append(raw.seconds())
        for name, times in throughput(models, jpegs, 1).items():
            seconds[name] += times
    sql = sql_throughput(jpegs, args.transport, args.repeats)
    n = len(jpegs)
    print(f"\nthroughput, {n} distinct 512x512 JPEGs (q90), images/s, best (median) of "
          f"{args.repeats}")
    print(f"  {'model':<24} {'raw model':>15} {'decode + infer, top-5':>22} {'vs raw':>7} "
          f"{'SQL top_label (' + args.transport + ')':>28} {'vs raw':>7}")
    for name in models:
        raw_rate = n / min(raw_seconds[name])
        print(f"  {name:<24} {raw_rate:>7.1f} ({n / statistics.median(raw_seconds[name]):>5.1f})"
              f" {n / min(seconds[name]):>13.1f} ({n / statistics.median(seconds[name]):>5.1f})"
              f" {n / min(seconds[name]) / raw_rate:>6.2f}x"
              f" {n / min(sql[name]):>19.1f} ({n / statistics.median(sql[name]):>5.1f})"
              f" {n / min(sql[name]) / raw_rate:>6.2f}x")
    for label, timing in (("raw model", raw_seconds), ("decode + infer", seconds),
                          ("SQL top_label", sql)):
        ratio = min(timing[FP32]) / min(timing[INT8])
        median_ratio = statistics.median(timing[FP32]) / statistics.median(timing[INT8])
        print(f"  int8 / fp32, {label + ':':<16} {ratio:.2f}x best, {median_ratio:.2f}x "
              f"median (aim >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

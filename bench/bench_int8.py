"""int8 against fp32 EfficientNet-Lite0: full-path throughput and agreement, in one run.

Throughput: ``Classifier.classify`` on N distinct real 512x512 JPEGs (``bench/images.py``,
seed 3: none of them is a calibration image), so each number includes read + decode +
resize/crop + normalization + onnxruntime + softmax + top-5. The two models alternate run by
run so a burst of load elsewhere hits both alike; each is images/s of the best of
``--repeats`` runs (the median too), and the ratio is int8 / fp32 from this run.

Agreement: every committed photograph and fixed variants of each (crops, mirror, half size,
JPEG and WebP re-encodes: ``bench.images.photo_variants``), plus ``--generated`` random crops
(seed 7): top-1 agreement with fp32, mean top-5 overlap, and for the committed photographs
whether the expected class is in int8's top 3.

Usage: python -m bench.bench_int8 [--images 64] [--repeats 5] [--generated 64]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

from bench.images import FIXTURES, make_jpegs, photo_variants
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
    throughput(models, jpegs[:8], 1)  # warm the decode pools and onnxruntime buffers
    seconds = throughput(models, jpegs, args.repeats)
    n = len(jpegs)
    print(f"\nthroughput, decode + infer, {n} distinct 512x512 JPEGs (q90), top-{TOP_K}, "
          f"best (median) of {args.repeats}")
    for name in models:
        print(f"  {name:<24} {n / min(seconds[name]):>7.1f} img/s "
              f"({n / statistics.median(seconds[name]):.1f})")
    ratio = min(seconds[FP32]) / min(seconds[INT8])
    median_ratio = statistics.median(seconds[FP32]) / statistics.median(seconds[INT8])
    print(f"  int8 / fp32: {ratio:.2f}x best, {median_ratio:.2f}x median (aim >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

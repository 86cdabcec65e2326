"""What storing a thumbnail per image costs write-back: time and store size, in one run.

Two measurements on the same N distinct 512x512 JPEGs (bench/images.py):

* classify -- ``Classifier.classify`` with and without thumbnails (the thumbnail is resized
              and encoded on the lanes from the pixels decoded for the model);
              interleaved rounds, best of each, in images/s;
* store    -- the classified rows written through ``WriteBack`` as one run, with the
              thumbnails and with ``thumbnail`` NULL, each into a fresh folder: seconds and
              bytes on disk per image.

Usage: python -m bench.bench_thumbnails [--images 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.images import make_jpegs
from vgi_vision.worker.lance.kinds import utc_now
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.vision.model import Classification, Classifier, load_classifier


def classify_rate(classifier: Classifier, images: list[bytes], thumbnails: bool) -> float:
    started = time.perf_counter()
    classifier.classify(images, 5, thumbnails=thumbnails)
    return len(images) / (time.perf_counter() - started)


def image_rows(classifier: Classifier, images: list[bytes],
               results: list[Classification | None], run_id: str, thumbnails: bool
               ) -> list[dict[str, Any]]:
    now = utc_now()
    rows = []
    for row, (data, result) in enumerate(zip(images, results, strict=True)):
        assert result is not None
        idxs = result.indices[:5].tolist()
        rows.append({"image_key": hashlib.sha256(data).hexdigest(), "path": None,
                     "model": classifier.info.name, "top_k": len(idxs), "idx": idxs,
                     "label": [classifier.info.labels[i] for i in idxs],
                     "confidence": result.probabilities[:5].tolist(), "run_id": run_id,
                     "created_at": now, "vector": result.embedding.tolist(),
                     "thumbnail": result.thumbnail if thumbnails else None, "input_row": row})
    return rows


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def store(classifier: Classifier, images: list[bytes], results: list[Classification | None],
          thumbnails: bool) -> tuple[float, int]:
    """Seconds to write and commit one run of image rows, and the store's size after."""
    with tempfile.TemporaryDirectory(prefix="bench-thumbs-") as tmp:
        folder = Path(tmp) / "db"
        sink = WriteBack(str(folder), classifier.info.embedding_dim)
        try:
            run_id = uuid.uuid4().hex
            rows = image_rows(classifier, images, results, run_id, thumbnails)
            started = time.perf_counter()
            for start in range(0, len(rows), 32):  # one classify tick's worth per write
                sink.write(run_id, rows[start:start + 32])
            sink.finish(run_id, len(rows))
            seconds = time.perf_counter() - started
        finally:
            sink.close()
        return seconds, folder_bytes(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = make_jpegs(args.images)
    classifier = load_classifier()
    classifier.warm_up()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for thumbnails in (False, True):
            rates[thumbnails].append(classify_rate(classifier, images, thumbnails))
    plain, with_thumbs = max(rates[False]), max(rates[True])
    print(f"cpus={os.cpu_count()} images={args.images} rounds={args.rounds}")
    print(f"classify  without thumbnails {plain:7.1f} images/s")
    print(f"classify  with thumbnails    {with_thumbs:7.1f} images/s  "
          f"(ratio {with_thumbs / plain:.2f})")
    results = classifier.classify(images, 5, thumbnails=True)
    thumb_bytes = sum(len(r.thumbnail or b"") for r in results if r is not None)
    print(f"thumbnails   {thumb_bytes / len(images) / 1024:.1f} KiB per image (JPEG)")
    (bare_s, bare_size), (thumb_s, thumb_size) = (store(classifier, images, results, t)
                                                  for t in (False, True))
    print(f"store     without thumbnails {bare_s:6.2f} s  {bare_size / len(images) / 1024:6.1f}"
          f" KiB/image")
    print(f"store     with thumbnails    {thumb_s:6.2f} s  {thumb_size / len(images) / 1024:6.1f}"
          f" KiB/image  (size ratio {thumb_size / bare_size:.2f})")


if __name__ == "__main__":
    main()

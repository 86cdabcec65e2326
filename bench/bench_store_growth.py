"""Write-back store growth: commit time and disk size over many runs, with and without the
periodic compaction, in the same run.

Each setting runs in a fresh child process on a fresh store: ``--runs`` runs of ``--images``
new image rows each (5 ranks and a 1280-d embedding, as classify stores them) go through the
real ``WriteBack`` (``write`` then ``finish``, as a function call does). Prints the mean and
worst ``finish`` (commit) time of the first and the last 50 runs, the fragments of ``images``
and ``staged`` and the store's size on disk at the end, and each setting's last-50 commit time
and disk size as a ratio of the no-compaction baseline (``compact_every=0``).

The default version retention (six hours) keeps every version this bench makes, so the disk size
with compaction includes the files it replaced; ``--retention-seconds`` shortens it to show
the steady state.

Usage: python -m bench.bench_store_growth [--runs 400] [--images 8] [--compact-every 0,10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from vgi_vision.worker.lance.kinds import IMAGES, STAGED, utc_now
from vgi_vision.worker.lance.store import VERSION_RETENTION
from vgi_vision.worker.lance.writeback import WriteBack

WINDOW = 50


def rows(run: int, n: int, run_id: str) -> list[dict]:
    now = utc_now()
    return [{"image_key": f"{run:032x}{i:032x}", "model": "efficientnet-lite0", "path": None,
             "top_k": 5, "idx": [(i + r) % 1000 for r in range(5)],
             "label": [f"class {(i + r) % 1000}" for r in range(5)],
             "confidence": [1.0 / (r + 2) for r in range(5)], "run_id": run_id,
             "created_at": now, "vector": [float(i % 7)] * 1280, "thumbnail": None,
             "input_row": i} for i in range(n)]


def disk_bytes(folder: str) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def measure(folder: str, runs: int, images: int, compact_every: int,
            retention: timedelta) -> dict:
    # A short queue window: the timed finish() is then the commit, not the wait for a batch.
    sink = WriteBack(folder, 1280, window_seconds=0.005, compact_every=compact_every,
                     version_retention=retention)
    commit_ms = []
    for run in range(runs):
        run_id = uuid.uuid4().hex
        sink.write(run_id, rows(run, images, run_id))
        started = time.perf_counter()
        sink.finish(run_id, images)
        commit_ms.append((time.perf_counter() - started) * 1000)
    stored = sink.version()
    fragments = {name: sink._run(sink.store.fragments(name)) for name in (IMAGES, STAGED)}
    count = sink._run(sink.store.images.count_rows())
    sink.close()
    return {"compact_every": compact_every, "commit_ms": commit_ms, "images": count,
            "version": stored, "fragments": fragments, "disk": disk_bytes(folder)}


def child(runs: int, images: int, compact_every: int, retention: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, __file__, "--child", str(compact_every),
                              "--runs", str(runs), "--images", str(images),
                              "--retention-seconds", str(retention), "--folder", folder],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--images", type=int, default=8, help="new images per run")
    parser.add_argument("--compact-every", default="0,10",
                        help="settings to compare, comma-separated (0: never compact)")
    parser.add_argument("--retention-seconds", type=float,
                        default=VERSION_RETENTION.total_seconds())
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    retention = timedelta(seconds=args.retention_seconds)
    if args.child is not None:
        print(json.dumps(measure(args.folder, args.runs, args.images, args.child, retention)))
        return
    settings = [int(s) for s in args.compact_every.split(",")]
    if 0 not in settings:
        settings.insert(0, 0)
    results = [child(args.runs, args.images, every, args.retention_seconds)
               for every in settings]
    print(f"command: python -m bench.bench_store_growth --runs {args.runs} --images "
          f"{args.images} --compact-every {args.compact_every} --retention-seconds "
          f"{args.retention_seconds:g}   (cpus: {os.cpu_count()}, "
          f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"{'compact_every':>13} {'first 50 ms':>12} {'last 50 ms':>11} {'worst last':>11} "
          f"{'images':>7} {'frags img/stg':>14} {'disk MB':>8} {'last/base':>10} "
          f"{'disk/base':>10}")
    base = results[0]
    base_last = statistics.mean(base["commit_ms"][-WINDOW:])
    for result in results:
        first = statistics.mean(result["commit_ms"][:WINDOW])
        last = statistics.mean(result["commit_ms"][-WINDOW:])
        worst = max(result["commit_ms"][-WINDOW:])
        frags = f"{result['fragments'][IMAGES]}/{result['fragments'][STAGED]}"
        print(f"{result['compact_every'] or 'never':>13} {first:>12.1f} {last:>11.1f} "
              f"{worst:>11.1f} {result['images']:>7} {frags:>14} "
              f"{result['disk'] / 2**20:>8.1f} {last / base_last:>9.2f}x "
              f"{result['disk'] / base['disk']:>9.2f}x")
    expected = args.runs * args.images
    assert all(r["images"] == expected for r in results), "a setting lost or duplicated images"


if __name__ == "__main__":
    main()

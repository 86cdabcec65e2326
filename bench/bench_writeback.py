"""LanceDB write-back: the coalescing queue against one ``add`` per row, in the same run.

Each mode runs in a fresh child process so its peak RSS is its own:

* queue   -- N staged image rows (5 ranks and a 1280-d embedding each) enqueued through
             ``CoalescingWriteQueue`` (default window and batch size) into the real
             ``PredictionStore``, every future awaited;
* per-row -- the same rows, one ``AsyncTable.add`` each (the baseline).

Per-row adds are slow (one table version each), so the baseline writes fewer rows by default
(--per-row-rows) and the comparison is in rows/second. Prints wall time, rows/s, peak RSS
growth over the process's state just before writing, and the speed-up.

Usage: python -m bench.bench_writeback [--rows 10000] [--per-row-rows 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time

import pyarrow as pa

from vgi_vision.worker.lance.kinds import utc_now
from vgi_vision.worker.lance.store import PredictionStore
from vgi_vision.worker.lance.write_queue import CoalescingWriteQueue
from vgi_vision.worker.stored import staged_schema


def rows(n: int) -> list[dict]:
    now = utc_now()
    return [{"image_key": f"{i:064x}", "model": "efficientnet-lite0", "path": None,
             "top_k": 5, "idx": [(i + r) % 1000 for r in range(5)],
             "label": [f"class {(i + r) % 1000}" for r in range(5)],
             "confidence": [1.0 / (r + 2) for r in range(5)], "run_id": "0" * 32,
             "created_at": now, "vector": [0.0] * 1280, "input_row": i} for i in range(n)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def write(mode: str, n: int, folder: str) -> dict:
    store = await PredictionStore.open(folder, 1280)
    records = rows(n)
    before = peak_rss_mb()
    started = time.perf_counter()
    if mode == "queue":
        queue: CoalescingWriteQueue[dict] = CoalescingWriteQueue(
            store.append)
        futures = [await queue.enqueue(r) for r in records]
        await asyncio.gather(*futures)
        await queue.stop()
    else:
        schema = staged_schema(1280)
        for record in records:
            await store.staged.add(pa.Table.from_pylist([record], schema=schema))
    seconds = time.perf_counter() - started
    stored = await store.staged.count_rows()
    store.close()
    return {"mode": mode, "rows": n, "stored": stored, "seconds": seconds,
            "rss_growth_mb": peak_rss_mb() - before}


def child(mode: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--rows", str(n),
                              "--folder", folder], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--per-row-rows", type=int, default=2_000)
    parser.add_argument("--child", choices=["queue", "per-row"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(write(args.child, args.rows, args.folder))))
        return
    queue = child("queue", args.rows)
    per_row = child("per-row", args.per_row_rows)
    print(f"command: python -m bench.bench_writeback --rows {args.rows} "
          f"--per-row-rows {args.per_row_rows}")
    print(f"{'mode':<8} {'rows':>7} {'stored':>7} {'seconds':>8} {'rows/s':>9} "
          f"{'peak RSS growth':>16}")
    for result in (queue, per_row):
        print(f"{result['mode']:<8} {result['rows']:>7} {result['stored']:>7} "
              f"{result['seconds']:>8.2f} {result['rows'] / result['seconds']:>9.0f} "
              f"{result['rss_growth_mb']:>13.1f} MB")
    speedup = (queue["rows"] / queue["seconds"]) / (per_row["rows"] / per_row["seconds"])
    print(f"queue vs one add per row: {speedup:.0f}x faster (aim >= 10x); queue peak RSS "
          f"growth {queue['rss_growth_mb']:.1f} MB at {queue['rows']} rows (aim < 100 MB)")


if __name__ == "__main__":
    main()

"""Many writers committing runs into one LanceDB store at once, as pipeline actors do.

Each committer is its own process with its own ``WriteBack`` on the same store (as Ray or
Daft actors are), committing ``--runs`` runs of ``--rows`` distinct image rows each (5 ranks
and a 1280-d embedding per row, the real staged schema) as fast as it can. Compared in one
run: 1 committer against ``--committers`` at once, in runs committed per second over the
whole store (the ratio says whether commits scale or serialize), plus the slowest single
commit and a check that every row landed exactly once (commit conflicts are retried, never
lost) with nothing left staged.

Usage: python -m bench.bench_committers [--committers 8] [--runs 20] [--rows 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
import uuid

import lancedb

from vgi_vision.worker.lance.kinds import utc_now
from vgi_vision.worker.lance.writeback import WriteBack

DIM = 1280


def run_rows(run_id: str, writer: int, run: int, rows: int) -> list[dict]:
    now = utc_now()
    return [{"image_key": f"{writer:08x}{run:08x}{row:048x}", "model": "efficientnet-lite0",
             "path": None, "top_k": 5, "idx": [(row + r) % 1000 for r in range(5)],
             "label": [f"class {(row + r) % 1000}" for r in range(5)],
             "confidence": [1.0 / (r + 2) for r in range(5)], "run_id": run_id,
             "created_at": now, "vector": [0.0] * DIM, "thumbnail": None, "input_row": row}
            for row in range(rows)]


def committer(store: str, writer: int, runs: int, rows: int, start: float) -> float:
    """Commit ``runs`` runs once ``start`` (a wall-clock time) comes; the slowest commit."""
    sink = WriteBack(store, DIM, recovery_grace_seconds=3600, compact_every=0)
    try:
        slowest = 0.0
        time.sleep(max(0.0, start - time.time()))
        for run in range(runs):
            run_id = uuid.uuid4().hex
            began = time.perf_counter()
            sink.write(run_id, run_rows(run_id, writer, run, rows))
            sink.finish(run_id, rows)
            slowest = max(slowest, time.perf_counter() - began)
        return slowest
    finally:
        sink.close()


def measure(committers: int, runs: int, rows: int) -> tuple[float, float]:
    """(runs committed per second, slowest commit s) with ``committers`` at once."""
    with tempfile.TemporaryDirectory() as store:
        WriteBack(store, DIM).close()  # the tables exist before the race starts
        start = time.time() + 5.0  # every process has opened the store by then
        with multiprocessing.get_context("spawn").Pool(committers) as pool:
            slowest = pool.starmap(committer, [(store, w, runs, rows, start)
                                               for w in range(committers)])
        elapsed = time.time() - start
        db = lancedb.connect(store)
        stored = db.open_table("images").count_rows()
        staged = db.open_table("staged").count_rows()
        assert stored == committers * runs * rows, f"{stored} rows stored"
        assert staged == 0, f"{staged} rows left staged"
    return committers * runs / elapsed, max(slowest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--committers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()
    print("| committers | runs/s | vs 1 | slowest commit s |")
    print("|---|---|---|---|")
    single, slowest = measure(1, args.runs, args.rows)
    print(f"| 1 | {single:.1f} | 1.00x | {slowest:.2f} |", flush=True)
    many, slowest = measure(args.committers, args.runs, args.rows)
    print(f"| {args.committers} | {many:.1f} | {many / single:.2f}x | {slowest:.2f} |")


if __name__ == "__main__":
    main()

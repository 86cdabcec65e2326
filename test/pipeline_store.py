"""Inputs and store counts for the pipeline (Ray, Daft) write-back tests."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import daft  # the [daft] extra is part of [test]
import lancedb
import numpy as np
from PIL import Image


def distinct_jpegs(count: int) -> list[bytes]:
    """``count`` distinct small JPEGs (seeded noise over a gradient)."""
    rng = np.random.default_rng(7)
    gradient = np.linspace(0, 255, 96, dtype=np.float32)[None, :, None]
    images = []
    for _ in range(count):
        pixels = np.clip(gradient + rng.normal(0, 40, (96, 96, 3)), 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=80)
        images.append(out.getvalue())
    assert len(set(images)) == count
    return images


def store_counts(uri: str | Path) -> dict[str, int]:
    """Rows per table of the store at ``uri`` (a folder, or an object URL: never a ``Path``
    made of one, which folds ``s3://`` into ``s3:/``)."""
    db = lancedb.connect(str(uri))
    counts = {name: db.open_table(name).count_rows() for name in ("images", "staged")}
    counts["run_images"] = sum(db.open_table("runs").to_arrow().column("images").to_pylist())
    return counts


def stored_images(uri: Path) -> int:
    """Rows in ``images`` now; 0 while the store is still being created by a writer."""
    try:
        return lancedb.connect(str(uri)).open_table("images").count_rows()
    except (ValueError, FileNotFoundError):  # no such table (yet)
        return 0


def interrupted_job(job: Callable[[], int], store: Path, interrupt: Callable[[], bool],
                    before: int) -> int:
    """Run ``job`` (it returns the rows it answered), and call ``interrupt`` once the store
    holds some images but fewer than ``before`` (mid-job) until it says it struck; the rows
    the job answered. Fails if the job ended before the interruption could strike."""
    answered: list[int] = []
    running = threading.Thread(target=lambda: answered.append(job()))
    running.start()
    struck = False
    deadline = time.monotonic() + 400
    while running.is_alive() and not struck and time.monotonic() < deadline:
        if 0 < stored_images(store) < before:
            struck = interrupt()
        time.sleep(0.2)
    running.join(timeout=600)
    assert struck, "the job ended before it could be interrupted mid-job"
    assert len(answered) == 1, "the job did not finish"
    return answered[0]


def assert_stored_once(uri: str, images: int, rerun: Callable[[], int]) -> None:
    """After a job whose workers were killed mid-batch: each image stored once, nothing left
    staged once the killed workers' runs are cleared, and the whole job again stores nothing."""
    from vgi_vision.batch import clear_unfinished_runs

    clear_unfinished_runs(uri)
    counts = store_counts(uri)
    assert counts["images"] == images and counts["staged"] == 0
    # A batch retried after its run committed counts again in runs, never in images.
    assert counts["run_images"] >= images
    assert rerun() == images
    assert store_counts(uri)["images"] == images


# Daft runs on its native runner in every pipeline test, whatever Ray session a test has up:
# Daft picks a Ray runner while Ray is initialized and keeps it for the process, and a runner
# made for one Ray session fails on the next (its actors are gone), so a Daft test after a Ray
# test module would pass or fail by test order. Set here, at collection, before any test runs.
daft.set_runner_native()

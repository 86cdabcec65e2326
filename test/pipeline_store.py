"""Inputs and store counts for the pipeline (Ray, Daft) write-back tests."""

from __future__ import annotations

import io
from pathlib import Path

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


def store_counts(uri: Path) -> dict[str, int]:
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

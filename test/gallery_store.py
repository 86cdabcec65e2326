"""A write-back store for the gallery tests: the test photos classified for real, plus hostile
rows written straight into the tables (a store is data, and data can be hostile)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import lancedb
import numpy as np
import pyarrow as pa
from PIL import Image

from vgi_vision.gallery.app import make_app
from vgi_vision.gallery.catalog import Catalog
from vgi_vision.gallery.facts import FilePolicy
from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.testing.launch import wait_for
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import IMAGES, OBJECTS, utc_now
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.vision.model import load_classifier

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "test" / "sql" / "data"

HOSTILE_LABEL = ("<script>window.__xss = 1</script>\"quoted\" 'single' & <b>bold</b> "
                 "<img src=x onerror=\"window.__xss = 2\">" + "long" * 400)
HOSTILE_PATH = "\"><script>window.__xss = 3</script><img src=x onerror='window.__xss=4'>.jpg"


@dataclass
class GalleryStore:
    uri: Path
    #: image_key -> top-1 label, for every image the grid must show
    labels: dict[str, str]
    #: image_key -> fixture file name (the hostile row has none)
    names: dict[str, str]
    hostile_key: str


def classify_into(sink: WriteBack, images: list[bytes] | list[str]) -> None:
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(), sink))
    kind = pa.binary() if isinstance(images[0], bytes) else pa.string()
    invoke_table_function(registry.get("classify"), argument_rows(
        [pa.array(images, kind), pa.array([5] * len(images), pa.int32())]))


def classified_store(uri: Path, *runs: list[bytes] | list[str]) -> None:
    """A write-back store at ``uri`` with one ``classify`` run per item of ``runs``."""
    sink = WriteBack(str(uri), 1280)
    try:
        for images in runs:
            classify_into(sink, images)
    finally:
        sink.close()


async def responses(uri: Path, urls: list[str], data_root: Path | None = REPO
                    ) -> list[httpx.Response]:
    """GET each URL from the gallery app in this process, over the store at ``uri`` (what the
    pages make of requests and stored data; the access rules are tested over a socket)."""
    catalog = await Catalog.open(str(uri), refresh_seconds=0)
    app = make_app(catalog, FilePolicy(str(data_root) if data_root else None))
    try:
        # A failing page comes back as the 500 a browser would get, not as an exception.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app,
                                                                   raise_app_exceptions=False),
                                     base_url="http://127.0.0.1") as client:
            return [await client.get(url) for url in urls]
    finally:
        catalog.close()


def detect_into(sink: WriteBack, images: list[bytes]) -> None:
    """Objects and faces of ``images``, stored by detection write-back."""
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(), sink))
    for name in ("detect", "faces"):
        invoke_table_function(registry.get(name), argument_rows(
            [pa.array(images, pa.binary()), pa.array([0.5] * len(images), pa.float64())]))


def build_store(folder: Path) -> GalleryStore:
    """Two runs (two photos by path, then every photo as BLOB, which stores the other two:
    an image is stored once), the photos' objects and faces, and one hostile stored row."""
    uri = folder / "store.lance"
    files = sorted(p for p in DATA.iterdir() if p.is_file())
    sink = WriteBack(str(uri), 1280)
    try:
        classify_into(sink, [str(p) for p in files[:2]])  # absolute, as stored by path
        classify_into(sink, [p.read_bytes() for p in files])
        detect_into(sink, [p.read_bytes() for p in files])
    finally:
        sink.close()
    classifier = load_classifier()
    labels, names = {}, {}
    for path in files:
        data = path.read_bytes()
        result = classifier.classify([data], top_k=1)[0]
        assert result is not None
        key = hashlib.sha256(data).hexdigest()
        labels[key] = classifier.info.labels[int(result.indices[0])]
        names[key] = path.name
    hostile_key = add_hostile_row(uri, classifier.classify([files[0].read_bytes()])[0].embedding)
    labels[hostile_key] = HOSTILE_LABEL
    return GalleryStore(uri, labels, names, hostile_key)


def add_hostile_row(uri: Path, near: np.ndarray) -> str:
    """A stored image whose label and path (and a stored detection's label) try to inject
    markup and script."""
    key = hashlib.sha256(b"hostile").hexdigest()
    picture = io.BytesIO()
    Image.new("RGB", (200, 120), (180, 40, 40)).save(picture, "JPEG")
    vector = near + np.random.default_rng(0).normal(0, 0.05, near.shape)
    async def write() -> None:
        db = await lancedb.connect_async(str(uri))
        images = await db.open_table(IMAGES)
        await images.add(pa.Table.from_pylist([{
            "image_key": key, "model": "efficientnet-lite0", "path": HOSTILE_PATH, "top_k": 2,
            "idx": [0, 1], "label": [HOSTILE_LABEL, "'; DROP TABLE x; --"],
            "confidence": [0.03, 0.02], "run_id": "f" * 32, "created_at": utc_now(),
            "vector": (vector / np.linalg.norm(vector)).astype(np.float32).tolist(),
            "thumbnail": picture.getvalue()}], schema=await images.schema()))
        images.close()
        objects = await db.open_table(OBJECTS)
        await objects.add(pa.Table.from_pylist([{
            "image_key": key, "model": "hostile-detector", "path": HOSTILE_PATH,
            "width": 200, "height": 120, "min_score": 0.5, "label": [HOSTILE_LABEL],
            "score": [0.9], "x0": [10], "y0": [10], "x1": [100], "y1": [100],
            "run_id": "f" * 32, "created_at": utc_now()}], schema=await objects.schema()))
        objects.close()
        db.close()

    asyncio.run(write())
    return key


@contextlib.contextmanager
def running_gallery(uri: Path, folder: Path, *extra: str, env: dict[str, str] | None = None
                    ) -> Iterator[str]:
    """``vgi-vision browse`` as a child process; yields its base URL."""
    port_file = folder / "gallery.port"
    port_file.unlink(missing_ok=True)
    with open(folder / "gallery.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vgi_vision", "browse", "--lance", str(uri), "--port", "0",
             "--port-file", str(port_file), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO,
            env={**os.environ, **(env or {})})
    try:
        wait_for(port_file.exists, process, "writing its port file")
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log_text = (folder / "gallery.log").read_text(errors="replace")
    assert process.returncode == 0, f"browse ended with {process.returncode}: {log_text}"

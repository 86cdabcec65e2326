"""Thumbnails: made from the decoded image, stored with each write-back run, migrated in.

Real photos, the real model and real LanceDB folders throughout.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from PIL import Image

from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import IMAGES
from vgi_vision.worker.lance.store import PredictionStore
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.stored import image_schema
from vgi_vision.worker.vision.imaging import THUMBNAIL_SIDE, decode, decode_image
from vgi_vision.worker.vision.model import load_classifier


def jpeg_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def open_jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    image.load()
    return image


def test_thumbnail_keeps_the_whole_picture_within_the_side(fixture_bytes: dict[str, bytes]
                                                          ) -> None:
    for name, data in fixture_bytes.items():
        decoded = decode_image(data, thumbnail=True)
        assert decoded is not None and decoded.thumbnail is not None, name
        thumb = open_jpeg(decoded.thumbnail)
        with Image.open(io.BytesIO(data)) as original:
            width, height = original.size
        assert max(thumb.size) == min(THUMBNAIL_SIDE, max(width, height)), name
        assert thumb.size[0] / thumb.size[1] == pytest.approx(width / height, rel=0.02), name
        assert len(decoded.thumbnail) < 30_000, name
        # the model's pixels do not depend on whether a thumbnail was asked for
        assert (decoded.pixels == decode(data)).all(), name


def test_thumbnail_follows_exif_orientation() -> None:
    # A landscape picture whose EXIF says "rotate 90 degrees": shown portrait.
    image = Image.new("RGB", (400, 200), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    decoded = decode_image(out.getvalue(), thumbnail=True)
    assert decoded is not None and decoded.thumbnail is not None
    assert open_jpeg(decoded.thumbnail).size == (128, 256)


def test_small_images_are_not_enlarged_and_odd_modes_become_rgb() -> None:
    tiny = Image.new("RGBA", (40, 30), (0, 0, 255, 0))
    out = io.BytesIO()
    tiny.save(out, "PNG")
    decoded = decode_image(out.getvalue(), thumbnail=True)
    assert decoded is not None and decoded.thumbnail is not None
    thumb = open_jpeg(decoded.thumbnail)
    assert thumb.size == (40, 30) and thumb.mode == "RGB"
    # transparent pixels composited on white, as for the model
    assert min(thumb.getpixel((20, 15))) > 240


def test_no_thumbnail_unless_asked(fixture_bytes: dict[str, bytes]) -> None:
    decoded = decode_image(next(iter(fixture_bytes.values())))
    assert decoded is not None and decoded.thumbnail is None
    assert decode_image(b"not an image", thumbnail=True) is None


def stored_embeddings(uri: Path) -> pa.Table:
    async def read() -> pa.Table:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(IMAGES)
        rows = await table.query().select(["image_key", "label", "thumbnail"]).to_arrow()
        table.close()
        db.close()
        return rows

    return asyncio.run(read())


def test_write_back_stores_a_thumbnail_per_blob_image(tmp_path: Path,
                                                      fixture_bytes: dict[str, bytes]) -> None:
    images = list(fixture_bytes.values()) + [b"\x89PNG broken", None]
    sink = WriteBack(str(tmp_path / "db"), 1280)
    try:
        registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(),
                                                sink))
        invoke_table_function(registry.get("classify"), argument_rows(
            [pa.array(images, pa.binary()), pa.array([3] * len(images), pa.int32())]))
    finally:
        sink.close()
    stored = stored_embeddings(tmp_path / "db")
    assert stored.num_rows == len(fixture_bytes)  # the broken and NULL images store nothing
    for thumbnail in stored.column("thumbnail").to_pylist():
        assert max(open_jpeg(thumbnail).size) <= THUMBNAIL_SIDE


def test_store_from_before_thumbnails_gains_the_column(tmp_path: Path) -> None:
    uri = str(tmp_path / "old")
    old_schema = pa.schema([f for f in image_schema(4) if f.name not in ("thumbnail", "phash")])

    async def scenario() -> pa.Table:
        db = await lancedb.connect_async(uri)
        table = await db.create_table(IMAGES, schema=old_schema)
        await table.add(pa.Table.from_pylist([{
            "image_key": "a" * 64, "model": "m", "path": None, "top_k": 1, "idx": [1],
            "label": ["old"], "confidence": [0.5], "run_id": "0" * 32, "created_at": None,
            "vector": [0.5, 0.5, 0.5, 0.5]}], schema=old_schema))
        table.close()
        store = await PredictionStore.open(uri, 4)
        try:
            return await store.images.query().select(["label", "thumbnail", "phash"]).to_arrow()
        finally:
            store.close()

    rows = asyncio.run(scenario())
    assert rows.to_pylist() == [{"label": ["old"], "thumbnail": None, "phash": None}]

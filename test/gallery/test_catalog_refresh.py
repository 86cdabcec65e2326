"""The gallery's summary follows the store without reloading it: runs committed since the
last look are read and upserted, a store changed by anything else is read again whole, and an
image's detail lists every path it was stored from.

Real LanceDB store filled by the real model; the real ASGI app for the detail page.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import lancedb
import pyarrow as pa
from gallery_store import classified_store, classify_into, responses
from PIL import Image

from vgi_vision.gallery.catalog import Catalog, Filter
from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import IMAGES
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.vision.model import load_classifier


def pictures(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (96, 96), (40 * i, 200 - 30 * i, 90)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def test_new_runs_are_upserted_and_other_changes_reload(tmp_path: Path) -> None:
    uri = tmp_path / "live.lance"
    photos = pictures(3)
    keys = [hashlib.sha256(p).hexdigest() for p in photos]
    sink = WriteBack(str(uri), 1280)
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(), sink))
    try:
        classify_into(sink, photos[:1])

        async def scenario() -> None:
            catalog = await Catalog.open(str(uri), refresh_seconds=0)
            try:
                first = await catalog.snapshot()
                await asyncio.to_thread(classify_into, sink, photos[1:2])
                second = await catalog.snapshot()
                assert second.con is first.con and second.version > first.version
                assert (await catalog.page(Filter()))[0] == 2

                # A wider classification replaces the stored row: upserted, not added.
                await asyncio.to_thread(invoke_table_function, registry.get("classify"),
                                        argument_rows([pa.array(photos[:1], pa.binary()),
                                                       pa.array([8], pa.int32())]))
                third = await catalog.snapshot()
                assert third.con is first.con and third.total == 2
                tile = await catalog.tile(keys[0])
                assert tile is not None and tile.run_id not in first.runs
                assert len(await catalog.top_k(tile)) == 8

                # A row no run recorded: the counts disagree, the summary is read again.
                db = await lancedb.connect_async(str(uri))
                images = await db.open_table(IMAGES)
                row = (await images.query().where(f"image_key = '{keys[1]}'").to_arrow())
                moved = row.set_column(0, row.schema.field("image_key"), pa.array([keys[2]]))
                await images.add(moved)
                images.close()
                db.close()
                fourth = await catalog.snapshot()
                assert fourth.con is not first.con and fourth.total == 3
                assert {t.image_key for t in (await catalog.page(Filter()))[1]} == set(keys)
            finally:
                catalog.close()

        asyncio.run(scenario())
    finally:
        sink.close()


def test_the_detail_lists_every_path_of_the_image(tmp_path: Path) -> None:
    photo = pictures(1)[0]
    copies = [tmp_path / "a" / "one.png", tmp_path / "b" / "copy of one.png"]
    for path in copies:
        path.parent.mkdir()
        path.write_bytes(photo)
    uri = tmp_path / "store.lance"
    classified_store(uri, *([str(path)] for path in copies))
    response, = asyncio.run(responses(
        uri, [f"/image/{hashlib.sha256(photo).hexdigest()}"], data_root=tmp_path))
    assert response.status_code == 200
    page = response.text
    assert "a/one.png" in page and "b/copy of one.png" in page and "also at" in page

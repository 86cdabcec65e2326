"""``vgi_vision.store``: the public, read-only view of a write-back store, as a reader outside
the worker (the gallery, a user's script) sees it: a pinned version keeps its rows while runs
commit, rows come back by row id, neighbours by embedding."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from gallery_store import DATA, classify_into

from vgi_vision.store import StoreReader
from vgi_vision.worker.lance.writeback import WriteBack


def test_a_folder_without_a_store_has_no_reader(tmp_path: Path) -> None:
    assert asyncio.run(StoreReader.open(str(tmp_path / "nothing.lance"))) is None


def test_a_pinned_version_keeps_its_rows_while_runs_commit(tmp_path: Path) -> None:
    uri = str(tmp_path / "store.lance")
    photos = sorted(p.read_bytes() for p in DATA.iterdir() if p.is_file())[:3]
    keys = [hashlib.sha256(p).hexdigest() for p in photos]
    sink = WriteBack(uri, 1280)
    try:
        classify_into(sink, photos[:2])

        async def read() -> None:
            reader = await StoreReader.open(uri)
            assert reader is not None
            try:
                images = await reader.at(await reader.version())
                try:
                    await asyncio.to_thread(classify_into, sink, photos[2:])
                    assert await reader.version() > images.version
                    rows = await images.rows(["image_key", "top_k"])
                    assert sorted(rows.column("image_key").to_pylist()) == sorted(keys[:2])
                    assert rows.column("top_k").to_pylist() == [5, 5]
                    ids = rows.column("_rowid").to_pylist()
                    taken = await images.take(ids[1:], ["image_key", "label"])
                    assert taken.column("image_key").to_pylist() == \
                        rows.column("image_key").to_pylist()[1:]
                    assert all(len(labels) == 5 for labels in taken.column("label").to_pylist())
                    vector = (await images.take(ids[:1], ["vector"])).column("vector")[0].as_py()
                    hits = await images.nearest(vector, 2, "efficientnet-lite0", ["image_key"])
                    assert hits.column("image_key").to_pylist()[0] == \
                        rows.column("image_key")[0].as_py()
                    assert hits.column("_distance").to_pylist()[0] < 1e-4
                    assert hits.num_rows == 2  # the third image is not in this version
                finally:
                    images.close()
                latest = await reader.at(await reader.version())
                try:
                    now = await latest.rows(["image_key"])
                    assert sorted(now.column("image_key").to_pylist()) == sorted(keys)
                finally:
                    latest.close()
            finally:
                reader.close()

        asyncio.run(read())
    finally:
        sink.close()

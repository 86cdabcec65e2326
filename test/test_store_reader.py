"""``vgi_vision.store``: the public, read-only view of a write-back store, as a reader outside
the worker (the gallery, a user's script) sees it: a pinned version keeps its rows while runs
commit, rows come back by row id, neighbours by embedding."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pyarrow as pa
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
                    rows = pa.Table.from_batches([b async for b in images.batches(
                        {"image_key": "image_key", "top_k": "top_k", "top1": "label[1]"})])
                    assert sorted(rows.column("image_key").to_pylist()) == sorted(keys[:2])
                    assert rows.column("top_k").to_pylist() == [5, 5]
                    taken = await images.rows_of(keys[1], "efficientnet-lite0",
                                                 ["image_key", "label"])
                    assert taken.column("image_key").to_pylist() == [keys[1]]
                    assert taken.column("label")[0].as_py()[0] in rows.column("top1").to_pylist()
                    assert (await images.rows_of(keys[2], None, ["image_key"])).num_rows == 0
                    assert (await images.rows_of(keys[1], "x' OR '1'='1",
                                                 ["image_key"])).num_rows == 0
                    vector = (await images.rows_of(keys[0], None, ["vector"])).column(
                        "vector")[0].as_py()
                    hits = await images.nearest(vector, 2, "efficientnet-lite0", ["image_key"])
                    assert hits.column("image_key").to_pylist()[0] == keys[0]
                    assert hits.column("_distance").to_pylist()[0] < 1e-4
                    assert hits.num_rows == 2  # the third image is not in this version
                    assert await reader.committed_runs() is not None
                    assert await reader.paths_of(keys[0]) == []  # stored from bytes
                finally:
                    images.close()
                latest = await reader.at(await reader.version())
                try:
                    now = [k for b in [b async for b in latest.batches(
                        {"image_key": "image_key"})] for k in b.column("image_key").to_pylist()]
                    assert sorted(now) == sorted(keys)
                finally:
                    latest.close()
            finally:
                reader.close()

        asyncio.run(read())
    finally:
        sink.close()

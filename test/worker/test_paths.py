"""Every path of every copy: one stored image per content and model, every path it was stored
from listed once, however many names, folders, runs and workers it came through; a store
written before paths were kept is upgraded in place.

Real LanceDB, the real model, real photographs written under several names.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from test_lance import distinct_photos, registry_with, stored, table_counts

from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.lance.kinds import IMAGES, PATHS, utc_now
from vgi_vision.worker.lance.paths import key_filter
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.stored import image_schema


def path_args(paths: list[Path], top_k: int = 2) -> pa.RecordBatch:
    return argument_rows([pa.array([str(p) for p in paths], pa.string()),
                          pa.array([top_k] * len(paths), pa.int32())])


def write_copies(folder: Path, photos: list[bytes], names: list[str]) -> list[Path]:
    """Every photo under every name in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, photo in enumerate(photos):
        for name in names:
            path = folder / f"{name}-{i}.jpg"
            path.write_bytes(photo)
            written.append(path)
    return written


def paths_by_image(rows: pa.Table) -> dict[str, list[str]]:
    """The ``paths`` list predictions() gives each image (the same on each of its ranks)."""
    lists: dict[str, list[list[str]]] = {}
    for key, paths in zip(rows.column("image_key").to_pylist(),
                          rows.column("paths").to_pylist(), strict=True):
        lists.setdefault(key, []).append(paths)
    for per_rank in lists.values():
        assert all(paths == per_rank[0] for paths in per_rank)
    return {key: per_rank[0] for key, per_rank in lists.items()}


def path_table(uri: Path) -> list[tuple[str, str]]:
    async def read() -> list[tuple[str, str]]:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(PATHS)
        rows = await table.query().select(["image_key", "path"]).to_arrow()
        table.close()
        db.close()
        return list(zip(rows.column("image_key").to_pylist(), rows.column("path").to_pylist(),
                        strict=True))

    return asyncio.run(read())


def test_copies_under_many_names_are_one_image_with_every_path(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    photos = distinct_photos(fixture_bytes, 3)
    files = write_copies(tmp_path / "photos", photos, ["a", "copy of a", "b"])
    sink = WriteBack(str(tmp_path / "db"), 1280)
    registry = registry_with(sink)
    invoke_table_function(registry.get("classify"), path_args(files))
    again = write_copies(tmp_path / "later", photos[:1], ["c"])  # a later run, a new name
    invoke_table_function(registry.get("classify"), path_args(again + files[:1]))
    listed = paths_by_image(stored(registry))
    sink.close()

    assert table_counts(tmp_path / "db")[IMAGES] == 3
    expected = [sorted(str(f) for f in files if f.name.endswith(f"-{i}.jpg")) for i in range(3)]
    expected[0].append(str(again[0]))  # first seen by the later run: listed last
    assert sorted(listed.values()) == sorted(expected)
    pairs = path_table(tmp_path / "db")
    assert len(pairs) == len(set(pairs)) == 3 * 3 + 1


def test_same_file_from_two_folders_by_two_workers_at_once(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """Two workers on one store classify the same files, each from its own folder and each
    folder twice, at the same time: one image row per content, every path listed once."""
    photos = distinct_photos(fixture_bytes, 6)
    folders = [write_copies(tmp_path / name, photos, ["photo"]) for name in ("left", "right")]
    uri = str(tmp_path / "db")
    sinks = [WriteBack(uri, 1280) for _ in range(2)]
    registries = [registry_with(sink) for sink in sinks]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def classify(registry, files: list[Path]) -> None:
        try:
            start.wait()
            for _ in range(2):
                invoke_table_function(registry.get("classify"), path_args(files))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=classify, args=(registry, files))
               for registry, files in zip(registries, folders, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors
    listed = paths_by_image(stored(registries[0]))
    for sink in sinks:
        sink.close()

    assert table_counts(tmp_path / "db")[IMAGES] == 6
    assert sorted(sorted(paths) for paths in listed.values()) == sorted(
        sorted([str(left), str(right)]) for left, right in zip(*folders, strict=True))
    pairs = path_table(tmp_path / "db")
    assert len(pairs) == len(set(pairs)) == 12


def test_a_store_written_before_paths_were_kept_is_upgraded_in_place(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """The previous layout (``images`` with one ``path`` per row, no ``paths`` table) opens
    with every stored row and path kept, and new copies add their paths."""
    photos = distinct_photos(fixture_bytes, 2)
    files = write_copies(tmp_path / "photos", photos, ["old"])
    sink = WriteBack(str(tmp_path / "db"), 1280)
    invoke_table_function(registry_with(sink).get("classify"), path_args(files))
    sink.close()
    old_rows = drop_paths_table(tmp_path / "db")

    copies = write_copies(tmp_path / "photos", photos[:1], ["new"])
    sink = WriteBack(str(tmp_path / "db"), 1280)
    registry = registry_with(sink)
    invoke_table_function(registry.get("classify"), path_args(copies))
    listed = paths_by_image(stored(registry))
    images = sink._run(sink.store.images.query().select(["image_key", "model", "path"])
                       .to_arrow()).to_pylist()
    sink.close()

    assert sorted(map(str, images)) == sorted(map(str, old_rows))  # nothing lost or added
    assert sorted(listed.values()) == sorted([[str(files[0]), str(copies[0])],
                                              [str(files[1])]])


def drop_paths_table(uri: Path) -> list[dict]:
    """Turn the store at ``uri`` into the previous layout: no ``paths`` table; the stored
    image rows (key, model, path) as they were."""

    async def drop() -> list[dict]:
        db = await lancedb.connect_async(str(uri))
        await db.drop_table(PATHS)
        table = await db.open_table(IMAGES)
        assert (await table.schema()).equals(image_schema(1280))
        rows = await table.query().select(["image_key", "model", "path"]).to_arrow()
        table.close()
        db.close()
        return rows.to_pylist()

    return asyncio.run(drop())


@pytest.mark.parametrize("bad", ["", "x" * 64, "A" * 64, "0" * 63, "0' OR '1'='1", None])
def test_only_sha256_keys_reach_a_filter(bad) -> None:
    with pytest.raises(ValueError, match="invalid image key"):
        key_filter(["0" * 64, bad])


def test_first_and_last_seen_move_only_forward(tmp_path: Path,
                                               fixture_bytes: dict[str, bytes]) -> None:
    files = write_copies(tmp_path / "photos", distinct_photos(fixture_bytes, 1), ["one"])
    sink = WriteBack(str(tmp_path / "db"), 1280)
    registry = registry_with(sink)
    before = utc_now()
    invoke_table_function(registry.get("classify"), path_args(files))
    first = sink._run(sink.store.paths.query().to_arrow()).to_pylist()
    invoke_table_function(registry.get("classify"), path_args(files))
    second = sink._run(sink.store.paths.query().to_arrow()).to_pylist()
    sink.close()
    assert len(first) == len(second) == 1
    assert before <= first[0]["first_seen"] == first[0]["last_seen"]
    assert second[0]["first_seen"] == first[0]["first_seen"] < second[0]["last_seen"]

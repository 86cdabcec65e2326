"""duplicates(): re-encoded and resized copies of one photograph are grouped together,
different photographs are kept apart, and each image comes with every path it was stored from.

Real photographs (test/sql/data), re-encoded and resized with PIL, classified by the real
model into a real LanceDB store; the grouping is checked on hashes too, exhaustively.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from test_lance import registry_with

from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.functions.duplicates import groups
from vgi_vision.worker.lance.writeback import WriteBack

DATA = Path(__file__).resolve().parents[1] / "sql" / "data"


def variants(photo: bytes) -> list[bytes]:
    """The photograph re-encoded as JPEG at two qualities and resized to 60% and 150%."""
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    out = []
    for quality, scale in ((90, 1.0), (60, 1.0), (85, 0.6), (85, 1.5)):
        sized = image.resize((int(image.width * scale), int(image.height * scale)))
        buffer = io.BytesIO()
        sized.save(buffer, "JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def test_copies_of_one_photo_group_together_and_photos_stay_apart(tmp_path: Path) -> None:
    photos = {p.name: p.read_bytes() for p in sorted(DATA.iterdir()) if p.is_file()}
    files: dict[str, list[Path]] = {}
    for name, photo in photos.items():
        files[name] = []
        for i, data in enumerate([photo, *variants(photo)]):
            path = tmp_path / "photos" / f"{i}-{name}.img"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            files[name].append(path)
    copy = tmp_path / "photos" / "copy-of-cat.png"  # a byte copy: same image, two paths
    copy.write_bytes(photos["cat.png"])
    every = [p for paths in files.values() for p in paths] + [copy]
    sink = WriteBack(str(tmp_path / "db"), 1280)
    registry = registry_with(sink)
    invoke_table_function(registry.get("classify"), argument_rows(
        [pa.array([str(p) for p in every], pa.string()), pa.array([1] * len(every), pa.int32())]))
    rows = invoke_table_function(registry.get("duplicates"),
                                 argument_rows([pa.array([6], pa.int32())])).to_pylist()
    strict = invoke_table_function(registry.get("duplicates"),
                                   argument_rows([pa.array([0], pa.int32())])).to_pylist()
    sink.close()

    key_of = {hashlib.sha256(p.read_bytes()).hexdigest(): name
              for name, paths in files.items() for p in paths}
    grouped: dict[int, set[str]] = {}
    for row in rows:
        grouped.setdefault(row["group_id"], set()).add(key_of[row["image_key"]])
    assert sorted(map(sorted, grouped.values())) == [[name] for name in sorted(photos)]
    assert len(rows) == 5 * len(photos)  # every copy in its photo's group
    assert all(row["distance"] <= 6 for row in rows)
    assert [row["distance"] for row in rows if row["distance"] == 0] != []
    cat = hashlib.sha256(photos["cat.png"]).hexdigest()
    assert [sorted(row["paths"]) for row in rows if row["image_key"] == cat] == \
        [sorted([str(files["cat.png"][0]), str(copy)])]
    assert len(strict) < len(rows)  # a bound of 0 keeps only identical hashes together


def root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def test_groups_are_the_connected_pairs_within_the_bound() -> None:
    """Against brute force (every pair compared, components by union-find) on random hashes
    with planted copies 1 to 8 bits away, so some lie just inside and some just outside
    each bound."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 200, dtype=np.int64).astype(np.uint64)
    planted = []
    for h in base:
        bits = rng.choice(64, size=int(rng.integers(1, 9)), replace=False)
        planted.append(h ^ np.uint64(sum(1 << int(b) for b in bits)))
    hashes = np.concatenate([base, np.array(planted, np.uint64), base[:5]])
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    for bound in (0, 2, 4, 6):
        parent = list(range(len(hashes)))

        for i, j in zip(*np.nonzero(distance <= bound), strict=True):
            parent[root(parent, int(i))] = root(parent, int(j))
        expected = [root(parent, i) for i in range(len(hashes))]
        found = groups(hashes, bound)
        for i in range(len(hashes)):
            alone = expected.count(expected[i]) == 1
            assert (found[i] == -1) == alone
            same = {j for j in range(len(hashes)) if expected[j] == expected[i]}
            assert alone or same == set(np.flatnonzero(found == found[i]))


@pytest.mark.parametrize("bound", [-1, 17])
def test_the_bound_is_checked(tmp_path: Path, bound: int) -> None:
    from vgi_vision.worker.registry import FunctionError

    sink = WriteBack(str(tmp_path / "db"), 1280)
    try:
        with pytest.raises(FunctionError, match="max_distance"):
            invoke_table_function(registry_with(sink).get("duplicates"),
                                  argument_rows([pa.array([bound], pa.int32())]))
    finally:
        sink.close()

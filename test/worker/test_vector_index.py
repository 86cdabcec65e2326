"""The vector index: similar() through it finds what exact search finds, images committed
after it was built are found at once, a search never leaves its model, maintenance builds the
index on its own past a size, and ``vgi-vision index`` builds it on demand.

Real LanceDB, the real models (fp32 and int8), real photographs cropped into distinct images;
the store is a few hundred images, an index with one partition.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from test_lance import classify_args, distinct_photos, registry_with

from vgi_vision.cli import main
from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.testing.s3server import LocalS3
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.vector_index import (
    TRAINABLE_ROWS,
    build_index,
    index_state,
    model_filter,
)
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.vision.model import load_classifier

STORED = 300
INT8 = "efficientnet-lite0-int8"


def similar(registry, images: list[bytes], k: int, model: str = "") -> list[list[str]]:
    """The keys similar() finds for each image, nearest first."""
    rows = invoke_table_function(registry.get("similar"), argument_rows(
        [pa.array(images, pa.binary()), pa.array([k] * len(images), pa.int32()),
         pa.array([model] * len(images), pa.string())]))
    found: list[list[str]] = [[] for _ in images]
    for row, key in zip(rows.column("input_row").to_pylist(),
                        rows.column("image_key").to_pylist(), strict=True):
        found[row].append(key)
    return found


@pytest.fixture(scope="module")
def photos(fixture_bytes: dict[str, bytes]) -> list[bytes]:
    return distinct_photos(fixture_bytes, STORED + 20)


def test_indexed_search_is_exact_search_and_finds_new_images(
        tmp_path: Path, photos: list[bytes]) -> None:
    sink = WriteBack(str(tmp_path / "db"), 1280)
    registry = registry_with(sink)
    for start in range(0, STORED, 100):
        invoke_table_function(registry.get("classify"),
                              classify_args(photos[start:start + 100], top_k=1))
    queries = photos[::37]
    exact = {k: similar(registry, queries, k) for k in (1, 5, 10)}
    assert sink._run(index_state(sink.store.images)) is None

    sink._run(build_index(sink.store.images))
    assert sink._run(index_state(sink.store.images)) == (STORED, 0)
    for k, found in exact.items():
        assert similar(registry, queries, k) == found

    new = photos[STORED:]
    invoke_table_function(registry.get("classify"), classify_args(new, top_k=1))
    assert sink._run(index_state(sink.store.images)) == (STORED, len(new))
    nearest = similar(registry, new, 1)
    sink.close()
    assert nearest == [[hashlib.sha256(p).hexdigest()] for p in new]


def test_a_search_never_leaves_its_model(tmp_path: Path, photos: list[bytes]) -> None:
    sink = WriteBack(str(tmp_path / "db"), 1280)
    fp32 = registry_with(sink)
    int8 = build_registry(VisionContext(load_classifier(INT8), PathPolicy.unrestricted(), sink))
    invoke_table_function(fp32.get("classify"), classify_args(photos[:TRAINABLE_ROWS], top_k=1))
    invoke_table_function(int8.get("classify"), classify_args(photos[200:260], top_k=1))
    sink._run(build_index(sink.store.images))
    keys = {model: {hashlib.sha256(p).hexdigest() for p in photos[span]}
            for model, span in (("fp32", slice(0, TRAINABLE_ROWS)), (INT8, slice(200, 260)))}

    query = photos[210:211]  # stored by both models
    assert set(similar(fp32, query, 1000)[0]) == keys["fp32"]
    assert set(similar(int8, query, 1000)[0]) == keys[INT8]
    # Another model's stored embedding of the image, from the fp32 worker.
    assert set(similar(fp32, query, 1000, INT8)[0]) == keys[INT8]
    assert similar(fp32, photos[300:301], 5, INT8) == [[]]  # not stored by int8
    assert similar(fp32, query, 5, "no-such-model") == [[]]
    assert similar(fp32, query, 5, "x' OR '1'='1") == [[]]
    sink.close()


@pytest.mark.parametrize("name", ["", "x' OR '1'='1", "a b", "-leading-dash", "é", "m" * 129,
                                  "efficientnet-lite0\n"])
def test_only_plain_model_names_reach_a_filter(name: str) -> None:
    assert model_filter(name) is None
    assert model_filter("efficientnet-lite0-int8") == "model = 'efficientnet-lite0-int8'"


def test_maintenance_builds_the_index_past_its_size_and_folds_new_rows_in(
        tmp_path: Path, photos: list[bytes]) -> None:
    sink = WriteBack(str(tmp_path / "db"), 1280, compact_every=1, index_min_rows=280)
    registry = registry_with(sink)
    invoke_table_function(registry.get("classify"), classify_args(photos[:260], top_k=1))
    sink.maintain()
    assert sink._run(index_state(sink.store.images)) is None  # below the size
    invoke_table_function(registry.get("classify"), classify_args(photos[260:STORED], top_k=1))
    sink.maintain()
    assert sink._run(index_state(sink.store.images)) == (STORED, 0)
    invoke_table_function(registry.get("classify"), classify_args(photos[STORED:], top_k=1))
    sink.maintain()
    assert sink._run(index_state(sink.store.images)) == (STORED + 20, 0)
    sink.close()


def test_the_index_command(tmp_path: Path, photos: list[bytes],
                           capsys: pytest.CaptureFixture[str]) -> None:
    uri = str(tmp_path / "db")
    assert main(["index", "--lance", uri]) == 2
    assert "holds no write-back store" in capsys.readouterr().err
    sink = WriteBack(uri, 1280)
    registry = registry_with(sink)
    invoke_table_function(registry.get("classify"), classify_args(photos[:10], top_k=1))
    assert main(["index", "--lance", uri]) == 2
    assert "an index needs at least 256" in capsys.readouterr().err
    invoke_table_function(registry.get("classify"),
                          classify_args(photos[10:TRAINABLE_ROWS], top_k=1))
    assert main(["index", "--lance", uri]) == 0
    assert f"indexed {TRAINABLE_ROWS} stored embeddings" in capsys.readouterr().out
    assert sink._run(index_state(sink.store.images)) == (TRAINABLE_ROWS, 0)
    sink.close()


def test_the_index_on_an_object_store(s3_env: LocalS3, photos: list[bytes]) -> None:
    """``vgi-vision index`` builds the index of an ``s3://`` store, and similar() searches
    through it there: a stored photograph's nearest stored image is itself."""
    s3_env.create_bucket("indexed-stores")
    uri = f"s3://indexed-stores/{uuid.uuid4().hex}"
    sink = WriteBack(uri, 1280)
    registry = registry_with(sink)
    invoke_table_function(registry.get("classify"),
                          classify_args(photos[:TRAINABLE_ROWS], top_k=1))
    assert main(["index", "--lance", uri]) == 0
    assert sink._run(index_state(sink.store.images)) == (TRAINABLE_ROWS, 0)
    queries = photos[:TRAINABLE_ROWS:64]
    nearest = [found[0] for found in similar(registry, queries, 1)]
    assert nearest == [hashlib.sha256(photo).hexdigest() for photo in queries]
    sink.close()

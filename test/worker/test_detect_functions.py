"""detect, faces, count_objects and count_faces as worker functions: paging across ticks,
resumed from serialized state and over every transport, and their argument checks."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow as pa
import pytest
from conftest import DATA
from PIL import Image
from resumed_ticks import resumed_batches

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import INPUT_ROW, argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import ROWS_PER_TICK, FunctionError, Registry
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import load_object_detector
from vgi_vision.worker.vision.faces import sigmoid_scores
from vgi_vision.worker.vision.model import load_classifier


def tiled(name: str, n: int) -> bytes:
    """The photograph ``n`` x ``n`` times over in one JPEG: many objects in one image."""
    photo = Image.open(DATA / name).convert("RGB")
    canvas = Image.new("RGB", (photo.width * n, photo.height * n))
    for i in range(n):
        for j in range(n):
            canvas.paste(photo, (i * photo.width, j * photo.height))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def crowd() -> bytes:
    """Grace Hopper 6 x 6 times: ~46 objects, so two such images overflow one tick."""
    return tiled("grace_hopper.jpg", 6)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted()))


def expected_rows(images: list[bytes | None], min_score: float) -> list[tuple]:
    found = load_object_detector().detect(images, DecodeLimits(), min_score)
    return [(row, number, d.label, d.x0, d.y0, d.x1, d.y1)
            for row, objects in enumerate(found) if objects
            for number, d in enumerate(objects, start=1)]


def rows_of(table: pa.Table) -> list[tuple]:
    columns = [INPUT_ROW, "object", "label", "x0", "y0", "x1", "y1"]
    return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))


def test_many_objects_page_across_ticks_and_resume_from_serialized_state(
        registry: Registry, crowd: bytes) -> None:
    images: list[bytes | None] = [crowd, None, crowd, b"junk"]
    expected = expected_rows(images, 0.3)
    assert len(expected) > 2 * ROWS_PER_TICK // 2 + 10  # more than one tick emits
    spec = registry.get("detect")
    resolved = spec.resolve(argument_rows([pa.array(images, pa.binary()),
                                           pa.array([0.3] * 4, pa.float64())]))
    batches = resumed_batches(spec, resolved)  # the HTTP path
    assert len(batches) >= 2 and max(b.num_rows for b in batches) <= ROWS_PER_TICK
    assert rows_of(pa.Table.from_batches(batches)) == sorted(expected)


def test_every_transport_pages_many_objects_exactly(client: Client, crowd: bytes) -> None:
    images: list[bytes | None] = [crowd, (DATA / "coffee.png").read_bytes(), crowd]
    table = client.table("detect", pa.array(images, pa.binary()),
                         pa.array([0.3] * 3, pa.float64()))
    assert rows_of(table) == sorted(expected_rows(images, 0.3))
    faces = client.table("faces", pa.array([tiled("grace_hopper.jpg", 3)], pa.binary()),
                         pa.array([0.5], pa.float64()))
    assert faces["face"].to_pylist() == list(range(1, faces.num_rows + 1))
    assert faces.num_rows >= 5


def test_count_objects_names_the_closest_labels_of_an_unknown_one(registry: Registry) -> None:
    spec = registry.get("count_objects")
    args = spec.resolve(argument_rows([pa.array([(DATA / "cat.png").read_bytes()]),
                                       pa.array(["Cat"]), pa.array([0.5])]))
    with pytest.raises(FunctionError, match="'Cat' is not a label of ssd-mobilenet-v2-coco; "
                                            "did you mean 'cat'"):
        spec.impl(args)
    ok = spec.resolve(argument_rows([pa.array([(DATA / "cat.png").read_bytes()] * 2),
                                     pa.array(["cat", "dog"]), pa.array([0.5, 0.5])]))
    assert spec.impl(ok).to_pylist() == [1, 0]


def test_an_unknown_label_over_a_transport_is_an_error_and_the_worker_keeps_serving(
        client: Client) -> None:
    cat = pa.array([(DATA / "cat.png").read_bytes()], pa.binary())
    with pytest.raises(WorkerError, match="did you mean 'person'"):
        client.call("count_objects", cat, pa.array(["persons"]), pa.array([0.5]))
    assert client.call("count_objects", cat, pa.array(["cat"]), pa.array([0.5])).to_pylist() \
        == [1]


def test_hostile_rows_give_no_rows_among_good_ones(registry: Registry) -> None:
    good = (DATA / "grace_hopper.jpg").read_bytes()
    images = [b"", good, good[:200], None, good]
    table = invoke_table_function(registry.get("faces"), argument_rows(
        [pa.array(images, pa.binary()), pa.array([0.5] * 5, pa.float64())]))
    assert table[INPUT_ROW].to_pylist() == [1, 4]


def test_extreme_logits_give_scores_of_zero_and_one_without_overflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = sigmoid_scores(np.array([-1e4, 0.0, 1e4], dtype=np.float32))
    assert scores[0] < 1e-40 and scores[1] == 0.5 and scores[2] == 1.0

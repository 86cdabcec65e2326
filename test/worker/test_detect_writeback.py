"""Detection write-back: what detect, faces, count_objects and count_faces found stored once
per (image, detector) in the LanceDB ``objects`` table, in all-or-nothing runs, unchanged by
repeats and replays.

Real LanceDB in tmp folders, the real detectors, the committed photographs.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import DATA
from lance_tables import assert_replayed_mid_state_stages_nothing, read_tables
from PIL import Image
from test_detect_functions import tiled
from test_lance import registry_with

from vgi_vision.protocol import INPUT_ROW, ErrorKind, argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.calls.detecting import DetectState
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import OBJECTS, OBJECTS_STAGED, RUNS
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import FunctionError
from vgi_vision.worker.ticks import run_ticks
from vgi_vision.worker.vision.detection import load_object_detector
from vgi_vision.worker.vision.faces import load_face_detector
from vgi_vision.worker.vision.model import load_classifier

COFFEE = (DATA / "coffee.png").read_bytes()
CAT = (DATA / "cat.png").read_bytes()
HOPPER = (DATA / "grace_hopper.jpg").read_bytes()
OBJECT_MODEL = load_object_detector().name
FACE_MODEL = load_face_detector().name


#: The tables this write-back fills.
TABLES = (OBJECTS, OBJECTS_STAGED, RUNS)


def blank() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), "white").save(buffer, "PNG")
    return buffer.getvalue()


def stored(uri: Path) -> dict[tuple[str | None, str], dict]:
    """(path, model) -> stored row, for every stored image."""
    return {(r["path"], r["model"]): r for r in read_tables(uri, TABLES)[OBJECTS].to_pylist()}


def image_args(images: list[bytes | None], min_score: float = 0.5) -> pa.RecordBatch:
    return argument_rows([pa.array(images, pa.binary()),
                          pa.array([min_score] * len(images), pa.float64())])


def path_args(paths: list[str], min_score: float = 0.5) -> pa.RecordBatch:
    """Rows of a path call; a path naming no file gives no rows (``missing := 'null'``)."""
    return argument_rows([pa.array(paths, pa.string()),
                          pa.array([min_score] * len(paths), pa.float64()),
                          pa.array(["null"] * len(paths), pa.string())])


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[WriteBack]:
    sink = WriteBack(str(tmp_path / "db"), embedding_dim=1280)
    yield sink
    sink.close()


def test_detect_and_faces_store_what_they_found_once_per_image_and_detector(
        tmp_path: Path, sink: WriteBack) -> None:
    registry = registry_with(sink)
    paths = [str(DATA / "coffee.png"), str(DATA / "cat.png"), str(DATA / "no-such.png"),
             str(DATA / "coffee.png")]
    objects = invoke_table_function(registry.get("detect"), path_args(paths))
    faces = invoke_table_function(registry.get("faces"), image_args([HOPPER, blank()]))
    tables = read_tables(tmp_path / "db", TABLES)
    assert tables[OBJECTS_STAGED].num_rows == 0 and tables[RUNS].num_rows == 2
    rows = stored(tmp_path / "db")
    assert set(rows) == {(paths[0], OBJECT_MODEL), (paths[1], OBJECT_MODEL),
                         (None, FACE_MODEL)} and len(tables[OBJECTS]) == 4  # blank: no faces
    coffee = rows[(paths[0], OBJECT_MODEL)]
    emitted = [r for r in objects.to_pylist() if r[INPUT_ROW] == 0]
    for column in ("label", "score", "x0", "y0", "x1", "y1"):
        assert coffee[column] == [r[column] for r in emitted]
    assert coffee["label"][:1] == ["cup"] and coffee["min_score"] == 0.5
    assert (coffee["width"], coffee["height"]) == (600, 400)  # what the boxes are within
    assert rows[(paths[1], OBJECT_MODEL)]["label"][0] == "cat"
    hopper = [r for r in tables[OBJECTS].to_pylist() if r["model"] == FACE_MODEL
              and r["label"]]
    assert len(hopper) == 1 and hopper[0]["label"] == ["face"] * faces.num_rows
    assert sum(1 for r in tables[OBJECTS].to_pylist() if not r["label"]) == 1  # the blank
    # stored_objects(): the same detections back, one row per image, detector and object
    read_back = invoke_table_function(registry.get("stored_objects"), argument_rows([], 1))
    assert sorted((r["path"] or "", r["model"], r["object"], r["label"], r["x0"])
                   for r in read_back.to_pylist()) == sorted(
        [(paths[0], OBJECT_MODEL, n, r["label"], r["x0"]) for n, r in
         enumerate(emitted, start=1)]
        + [(paths[1], OBJECT_MODEL, n, label, x0) for n, (label, x0) in
           enumerate(zip(rows[(paths[1], OBJECT_MODEL)]["label"],
                         rows[(paths[1], OBJECT_MODEL)]["x0"], strict=True), start=1)]
        + [("", FACE_MODEL, n, "face", x0) for n, x0 in
           enumerate(hopper[0]["x0"], start=1)])


def test_detecting_again_stores_each_image_once_keeping_the_fullest_search(
        tmp_path: Path, sink: WriteBack) -> None:
    registry = registry_with(sink)
    detect = registry.get("detect")
    invoke_table_function(detect, image_args([COFFEE, CAT]))
    invoke_table_function(detect, image_args([COFFEE, CAT, COFFEE]))  # a re-run query
    count = registry.get("count_objects")
    counts = count.impl(count.resolve(argument_rows(
        [pa.array([COFFEE, None, b"junk"], pa.binary()), pa.array(["cup"] * 3),
         pa.array([0.5] * 3, pa.float64())])))
    assert counts.to_pylist() == [1, None, None]
    assert read_tables(tmp_path / "db", TABLES)[OBJECTS].num_rows == 2
    invoke_table_function(detect, image_args([COFFEE], 0.3))  # keeps more: replaces
    invoke_table_function(detect, image_args([COFFEE, CAT], 0.9))  # keeps fewer: stays
    rows = {r["image_key"][:8]: r
            for r in read_tables(tmp_path / "db", TABLES)[OBJECTS].to_pylist()}
    assert sorted(r["min_score"] for r in rows.values()) == [0.3, 0.5]
    wide = next(r for r in rows.values() if r["min_score"] == 0.3)
    assert wide["label"] == [d.label for d in load_object_detector().detect(
        [COFFEE], load_classifier().limits, 0.3)[0]]
    tables = read_tables(tmp_path / "db", TABLES)
    assert tables[RUNS].num_rows == 5 and tables[OBJECTS_STAGED].num_rows == 0
    faces = registry.get("count_faces")
    assert faces.impl(faces.resolve(image_args([HOPPER, HOPPER]))).to_pylist() == [1, 1]
    assert read_tables(tmp_path / "db", TABLES)[OBJECTS].num_rows == 3  # Hopper's faces, once


def test_replayed_states_of_a_paged_scan_leave_the_committed_run_unchanged(
        tmp_path: Path, sink: WriteBack) -> None:
    spec = registry_with(sink).get("detect")
    crowd = tiled("grace_hopper.jpg", 6)  # twice: more objects than one tick emits
    args = spec.resolve(image_args([crowd, crowd, COFFEE], 0.3))
    state = spec.impl.initial_state(args)
    saved: list[bytes] = []
    while True:
        saved.append(state.to_bytes())
        if run_ticks(spec, args, state, max_ticks=1).finished:
            break
    assert len(saved) >= 2  # detected in one tick, emitted over several
    before = read_tables(tmp_path / "db", TABLES)[OBJECTS].sort_by("image_key")
    assert before.num_rows == 2  # the crowd once
    for data in saved:  # every state, replayed after the commit (the first one included)
        replayed = DetectState.from_bytes(data)
        while not run_ticks(spec, args, replayed, max_ticks=1).finished:
            pass
    sink.close()  # every batch write-back took has landed
    after = read_tables(tmp_path / "db", TABLES)
    assert after[OBJECTS].sort_by("image_key").equals(before)
    assert after[OBJECTS_STAGED].num_rows == 0 and after[RUNS].num_rows == 1


def test_a_run_that_fails_part_way_leaves_nothing(tmp_path: Path) -> None:
    """The second tick meets a path outside the data root after the first staged its eight
    images: the call fails and none of its detections stay, staged or stored."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("coffee.png", "cat.png"):
        shutil.copy(DATA / name, root / name)
    sink = WriteBack(str(tmp_path / "db"), embedding_dim=1280)
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.confined(root), sink))
    detect = registry.get("detect")
    invoke_table_function(detect, path_args(["cat.png"]))  # one good run first
    before = read_tables(tmp_path / "db", TABLES)
    with pytest.raises(FunctionError) as info:
        invoke_table_function(detect, path_args(["coffee.png"] * 8 + ["/etc/hostname"]))
    assert info.value.kind is ErrorKind.PATH_REFUSED
    with pytest.raises(FunctionError):  # the scalar's run too
        count = registry.get("count_objects")
        count.impl(count.resolve(argument_rows(
            [pa.array(["coffee.png", "/etc/hostname"]), pa.array(["cup"] * 2),
             pa.array([0.5] * 2, pa.float64())])))
    sink.close()
    after = read_tables(tmp_path / "db", TABLES)
    assert after[OBJECTS].equals(before[OBJECTS]) and after[OBJECTS].num_rows == 1
    assert after[OBJECTS_STAGED].num_rows == 0 and after[RUNS].num_rows == 1


def test_a_mid_scan_state_replayed_last_stages_nothing(tmp_path: Path) -> None:
    """After the commit, the state that detects in the last images is resumed for one tick
    (one request) and nothing follows: that tick leaves detections pending, so the run does
    not finish and nothing clears what it would stage. A replay that wrote again would leave
    its rows behind for a committed run."""
    uri = tmp_path / "db"
    sink = WriteBack(str(uri), embedding_dim=1280)
    spec = registry_with(sink).get("detect")
    crowd = tiled("grace_hopper.jpg", 6)
    args = spec.resolve(image_args([COFFEE] * 8 + [crowd, crowd], 0.3))  # 8 a tick, then 2
    assert_replayed_mid_state_stages_nothing(spec, args, sink, TABLES)


def test_the_stored_size_is_the_displayed_one(tmp_path: Path, sink: WriteBack) -> None:
    """A JPEG stored sideways with EXIF orientation 6: boxes and size are the upright
    picture's, so the boxes fit inside the size."""
    photo = Image.open(DATA / "coffee.png").convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", exif=exif)
    invoke_table_function(registry_with(sink).get("detect"), image_args([buffer.getvalue()]))
    row, = read_tables(tmp_path / "db", TABLES)[OBJECTS].to_pylist()
    assert (row["width"], row["height"]) == (600, 400) and row["label"][0] == "cup"
    assert max(row["x1"]) <= 600 and max(row["y1"]) <= 400

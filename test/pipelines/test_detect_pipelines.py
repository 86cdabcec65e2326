"""The detection functions as pipeline steps: the engine-neutral core Ray Data and Daft run
gives what SQL gives, hostile rows included."""

from __future__ import annotations

import pickle

import duckdb
import pyarrow as pa
import pytest
from conftest import DATA

import vgi_vision
from vgi_vision.batch import BatchFunction
from vgi_vision.transports.inprocess import InProcessTransport

pytestmark = pytest.mark.pipelines

PHOTOS = sorted(p for p in DATA.iterdir() if p.is_file())
HOSTILE = [b"", b"not an image", None]


@pytest.fixture(scope="module")
def photos() -> pa.Table:
    images = [p.read_bytes() for p in PHOTOS] + HOSTILE
    return pa.table({"id": list(range(len(images))), "bytes": pa.array(images, pa.binary())})


def test_detect_and_counts_as_pipeline_steps_give_what_sql_gives(photos: pa.Table) -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, transport=InProcessTransport.start())
    try:
        con.register("photos", photos)
        objects = con.execute("SELECT p.id, d.object, d.label, d.x0, d.y0, d.x1, d.y1 FROM "
                              "photos p, vision.detect(p.bytes) d ORDER BY ALL").fetchall()
        people = con.execute("SELECT id, vision.count_objects(bytes, 'person'), "
                             "vision.count_faces(bytes) FROM photos ORDER BY id").fetchall()
    finally:
        vgi_vision.detach(con)
    assert {label for _, _, label, *_ in objects} >= {"cat", "cup", "person"}

    detect = pickle.loads(pickle.dumps(BatchFunction("detect", "bytes")))
    table = detect(photos)
    assert sorted(zip(*(table[c].to_pylist() for c in
                        ("id", "object", "label", "x0", "y0", "x1", "y1")),
                      strict=True)) == objects
    count_people = BatchFunction("count_objects", "bytes", label="person")
    count_faces = BatchFunction("count_faces", "bytes")
    counted = count_faces(count_people(photos))
    assert list(zip(counted["id"].to_pylist(), counted["count_objects"].to_pylist(),
                    counted["count_faces"].to_pylist(), strict=True)) == people
    for core in (detect, count_people, count_faces):
        core.close()

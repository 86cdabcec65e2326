"""A detector of one's own: an SSD-style model directory served with ``serve --detector``,
its labels and name used by detect(), count_objects() and write-back.

The directory is the shipped SSD's graph (linked, not copied) with a label table of its own:
two classes, one renamed, so what is answered can only come from the user's folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import DATA, REPO

import vgi_vision
from vgi_vision.testing.launch import running_worker
from vgi_vision.worker.vision.model_files import models_root

SHIPPED = models_root() / "ssd-mobilenet-v2-coco"


@pytest.fixture
def detector_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mugs"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(SHIPPED / "model.onnx")
    (folder / "labels.tsv").write_text("class_id\tlabel\n1\tperson\n47\tmug\n")
    metadata = json.loads((SHIPPED / "metadata.json").read_text())
    metadata.update(name="mugs-and-people", license="Apache-2.0")
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


@pytest.mark.parametrize("transport", ["unix", "http"])
def test_a_detector_directory_of_ones_own_is_served(detector_dir: Path, tmp_path: Path,
                                                    transport: str) -> None:
    con = duckdb.connect()
    with running_worker(transport, "--detector", str(detector_dir), "--data-root", str(REPO),
                        "--lance", str(tmp_path / "store.lance"),
                        workdir=tmp_path / "worker") as worker:
        vgi_vision.attach(con, worker.location)
        try:
            coffee = str(DATA / "coffee.png")
            assert con.execute(f"SELECT label FROM vision.detect('{coffee}') ORDER BY object"
                               ).fetchall() == [("mug",)]  # bowl and table are not its classes
            assert con.execute(f"SELECT vision.count_objects('{coffee}', 'mug')").fetchone() \
                == (1,)
            with pytest.raises(duckdb.Error, match=r"'cup' is not a label of mugs-and-people "
                                                   r"\(its 2 labels: person, mug\)"):
                con.execute(f"SELECT vision.count_objects('{coffee}', 'cup')").fetchall()
            assert con.execute("SELECT DISTINCT model, label FROM vision.stored_objects()"
                               ).fetchall() == [("mugs-and-people", "mug")]
        finally:
            vgi_vision.detach(con)


def test_serve_refuses_a_detector_that_is_not_ssd_in_one_line() -> None:
    face_model = models_root() / "blazeface-short-range"
    result = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--detector",
                             str(face_model)], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not an object (ssd) detector" in lines[0], result.stderr

"""Bring-your-own classifier: a model directory built here with the ``onnx`` helper API.

The model is small but real: it averages the image's colour channels and scores four
classes (red, green, blue, gray) from them, with the channel means as its embedding. It runs
end to end over all three transports, and every way its directory can be wrong is refused at
load or at start-up with one clear error.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import vgi_vision
from vgi_vision.errors import ModelError
from vgi_vision.testing.launch import TRANSPORTS, running_worker
from vgi_vision.worker.vision.model import Classifier
from vgi_vision.worker.vision.model_files import ModelInfo

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
CLASSES = ("red", "green", "blue", "gray")
COLOURS = {"red": (220, 20, 30), "green": (10, 200, 40), "blue": (20, 30, 230),
           "gray": (128, 128, 128)}


def colour_model(batch_ignored: bool = False) -> onnx.ModelProto:
    """pixels (N x 3 x 32 x 32, 0..1) -> channel means (embedding) -> 4 class scores.

    ``batch_ignored``: the means are averaged over the batch too, so any batch gets one row
    of scores (a graph exported with its batch dimension folded away behaves like this).
    """
    weights = 20 * np.array([[1, -0.5, -0.5, 0], [-0.5, 1, -0.5, 0], [-0.5, -0.5, 1, 0]],
                            dtype=np.float32)
    bias = np.array([0, 0, 0, 2], dtype=np.float32)
    pooling = [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
               helper.make_node("Flatten", ["pooled"], ["per_image"], axis=1),
               helper.make_node("ReduceMean", ["per_image"], ["means"], axes=[0])
               if batch_ignored else helper.make_node("Identity", ["per_image"], ["means"])]
    graph = helper.make_graph(
        [*pooling,
         helper.make_node("MatMul", ["means", "weights"], ["product"]),
         helper.make_node("Add", ["product", "bias"], ["scores"])],
        "colours",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(CLASSES)]),
         helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    data = colour_model().SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    (folder / "labels.tsv").write_text(
        "idx\tlabel\n" + "".join(f"{i}\t{name}\n" for i, name in enumerate(CLASSES)))
    (folder / "metadata.json").write_text(json.dumps({
        "name": "colours",
        "sha256": hashlib.sha256(data).hexdigest(),
        "precision": "fp32",
        "license": "CC0-1.0",
        "input": {"name": "pixels", "layout": "NCHW", "size": [SIZE, SIZE],
                  "normalization": {"mean": [0, 0, 0], "std": [255, 255, 255]}},
        "outputs": {"logits": "scores", "embedding": "means"},
        "embedding_dim": 3,
    }, indent=2))
    return folder


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("user-model") / "colours")


@pytest.fixture
def broken(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the model directory to damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "colours"))


def edit_metadata(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = meta
        for part in parents:
            target = target[part]
        target[key] = value
    (folder / "metadata.json").write_text(json.dumps(meta))


# --- in process ------------------------------------------------------------------------------

def test_the_model_classifies_colours(model_dir: Path) -> None:
    classifier = Classifier(ModelInfo.load(model_dir))
    results = classifier.classify([png(c) for c in COLOURS.values()], top_k=4)
    assert [CLASSES[int(r.indices[0])] for r in results] == list(COLOURS)
    for r in results:
        assert r.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert r.embedding.shape == (3,) and np.linalg.norm(r.embedding) == pytest.approx(1)
    assert classifier.info.wnids == (None,) * 4


def load_and_start(folder: Path) -> None:
    Classifier(ModelInfo.load(folder)).warm_up()


def damage(folder: Path, problem: str) -> None:
    if problem == "missing model.onnx":
        (folder / "model.onnx").unlink()
    elif problem == "missing labels.tsv":
        (folder / "labels.tsv").unlink()
    elif problem == "missing metadata.json":
        (folder / "metadata.json").unlink()
    elif problem == "wrong sha256":
        edit_metadata(folder, sha256="0" * 64)
    elif problem == "label count != output width":
        with open(folder / "labels.tsv", "a") as labels:
            labels.write("4\tpurple\n")
    elif problem == "input size not the graph's":
        edit_metadata(folder, input__size=[64, 64])
    elif problem == "input layout not the graph's":
        edit_metadata(folder, input__layout="NHWC")
    elif problem == "no such input":
        edit_metadata(folder, input__name="images")
    elif problem == "no such embedding output":
        edit_metadata(folder, outputs__embedding="features")
    elif problem == "wrong embedding_dim":
        edit_metadata(folder, embedding_dim=1280)
    elif problem == "no such logits output":
        edit_metadata(folder, outputs__logits="logits")
    elif problem == "normalization NaN":
        edit_metadata(folder, input__normalization={"mean": [0, float("nan"), 0],
                                                    "std": [255, 255, 255]})
    elif problem == "normalization infinite":
        edit_metadata(folder, input__normalization={"mean": [0, 0, 0],
                                                    "std": [255, float("inf"), 255]})
    elif problem == "resize_shorter_side not positive":
        edit_metadata(folder, input__resize_shorter_side=0)
    elif problem == "graph ignores the batch":
        data = colour_model(batch_ignored=True).SerializeToString()
        (folder / "model.onnx").write_bytes(data)
        edit_metadata(folder, sha256=hashlib.sha256(data).hexdigest())
    elif problem == "a shipped model's name":
        edit_metadata(folder, name="efficientnet-lite0")
    elif problem == "normalization not 3 numbers":
        edit_metadata(folder, input__normalization={"mean": [0], "std": [1, 1, 1]})
    elif problem == "input size absurd":
        edit_metadata(folder, input__size=[100_000, 100_000])
    elif problem == "labels out of order":
        (folder / "labels.tsv").write_text("idx\tlabel\n1\tgreen\n0\tred\n2\tblue\n3\tgray\n")
    elif problem == "duplicate labels":
        (folder / "labels.tsv").write_text("idx\tlabel\n0\tred\n1\tred\n2\tblue\n3\tgray\n")
    else:
        raise AssertionError(problem)


#: Each problem and what its one error must say.
PROBLEMS = {
    "missing model.onnx": ["model file missing", "model.onnx"],
    "missing labels.tsv": ["label table missing", "labels.tsv"],
    "missing metadata.json": ["model metadata missing", "metadata.json"],
    "wrong sha256": ["is corrupt: sha256", "does not match"],
    "label count != output width": ["logits output 'scores' has shape [2, 4]",
                                    "label table has 5 classes"],
    "input size not the graph's": ["input 'pixels' has shape ['N', 3, 32, 32]",
                                   "describes Nx3x64x64 (NCHW)"],
    "input layout not the graph's": ["describes Nx32x32x3 (NHWC)"],
    "no such input": ["has no input 'images'", "pixels"],
    "no such embedding output": ["names the embedding output 'features'",
                                 "does not have", "scores, means"],
    "wrong embedding_dim": ["embedding output 'means' has shape [2, 3]", "embedding_dim 1280"],
    "no such logits output": ["names the logits output 'logits'"],
    "normalization not 3 numbers": ["'input.normalization.mean' must be three finite numbers"],
    "normalization NaN": ["'input.normalization.mean' must be three finite numbers", "nan"],
    "normalization infinite": ["'input.normalization.std' must be three finite numbers", "inf"],
    "resize_shorter_side not positive": ["input.resize_shorter_side must be in 32..4096",
                                         "got 0"],
    "graph ignores the batch": ["output 'scores' has shape [1, 4] for a batch of 2 images",
                                "one row per image"],
    "a shipped model's name": ["name 'efficientnet-lite0' is a shipped model's"],
    "input size absurd": ["input.size must be a square [n, n] with n in 1..4096"],
    "labels out of order": ["line 2: expected idx 0"],
    "duplicate labels": ["labels must be unique"],
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_each_problem_has_one_clear_error(broken: Path, problem: str) -> None:
    damage(broken, problem)
    with pytest.raises(ModelError) as info:
        load_and_start(broken)
    message = str(info.value)
    assert "\n" not in message
    for text in PROBLEMS[problem]:
        assert text in message, message


def test_serve_refuses_a_broken_model_directory_in_one_line(broken: Path) -> None:
    damage(broken, "label count != output width")
    result = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--model",
                             str(broken)], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "label table has 5 classes" in lines[0], result.stderr


def test_write_back_needs_an_embedding_output(broken: Path, tmp_path: Path) -> None:
    edit_metadata(broken, outputs__embedding=None)
    con = duckdb.connect()
    with pytest.raises(Exception, match="has no embedding output"):
        vgi_vision.attach(con, model=str(broken), lance=str(tmp_path / "store"))
    vgi_vision.attach(con, model=str(broken))  # without write-back it serves
    try:
        assert con.execute("SELECT embedding_size FROM vision.models() WHERE serving"
                           ).fetchone() == (None,)
        assert con.execute(f"SELECT vision.top_label({sql_blob(png(COLOURS['blue']))})"
                           ).fetchone() == ("blue",)
    finally:
        vgi_vision.detach(con)


def test_write_back_with_a_user_model(model_dir: Path, tmp_path: Path) -> None:
    """Its predictions and 3-float embeddings are stored under its name; a store made for
    another model's embeddings is refused at start-up, not at the first write."""
    store = tmp_path / "store"
    con = duckdb.connect()
    vgi_vision.attach(con, model=str(model_dir), lance=str(store))
    try:
        for rgb in COLOURS.values():
            con.execute(f"SELECT vision.top_label({sql_blob(png(rgb))})").fetchone()
        assert con.execute("SELECT model, label FROM vision.predictions() ORDER BY label"
                           ).fetchall() == [("colours", c) for c in sorted(COLOURS)]
        nearest = con.execute(f"SELECT label FROM vision.similar("
                              f"{sql_blob(png((200, 40, 40)))}, k := 1)").fetchone()
        assert nearest == ("red",)
    finally:
        vgi_vision.detach(con)
    with pytest.raises(Exception, match="does not fit model efficientnet-lite0 .embeddings of "
                                        "1280 floats.*its own --lance URI"):
        vgi_vision.attach(con, lance=str(store))


def sql_blob(data: bytes) -> str:
    return f"from_hex('{data.hex()}')"


# --- end to end, every transport -------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_user_model_end_to_end(model_dir: Path, transport: str) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE swatches (name VARCHAR, image BLOB)")
    rows = [(name, png(rgb)) for name, rgb in COLOURS.items()]
    rows += [("junk", b"not an image"), ("null", None)]
    con.executemany("INSERT INTO swatches VALUES (?, ?)", rows)
    with running_worker(transport, "--model", str(model_dir), "--data-root",
                        str(model_dir)) as worker:
        if worker.location is None:
            vgi_vision.attach(con, model=str(model_dir))
        else:
            vgi_vision.attach(con, worker.location)
        try:
            assert con.execute(
                "SELECT name, source, input_size, classes, embedding_size, precision, "
                "license, serving FROM vision.models() WHERE serving").fetchall() == [
                ("colours", "directory", SIZE, 4, 3, "fp32", "CC0-1.0", True)]
            assert con.execute("SELECT count(*) FROM vision.models() WHERE name = "
                               "'efficientnet-lite0' AND NOT serving").fetchone() == (1,)
            assert con.execute("SELECT idx, label, wnid FROM vision.image_classes() "
                               "ORDER BY idx").fetchall() == \
                [(i, name, None) for i, name in enumerate(CLASSES)]
            labels = con.execute("SELECT name, vision.top_label(image) FROM swatches "
                                 "ORDER BY name").fetchall()
            assert labels == sorted([(n, n) for n in COLOURS] + [("junk", None),
                                                                   ("null", None)])
            ranked = con.execute(
                "SELECT s.name, count(*), min(c.rank), max(c.rank), sum(c.confidence) "
                "FROM swatches s, vision.classify(s.image, top_k := 4) c "
                "GROUP BY s.name ORDER BY s.name").fetchall()
            assert [r[:4] for r in ranked] == [(n, 4, 1, 4) for n in sorted(COLOURS)]
            assert all(r[4] == pytest.approx(1.0, abs=1e-6) for r in ranked)
            with pytest.raises(duckdb.Error, match="top_k must be between 1 and 4, got 5"):
                con.execute("SELECT * FROM vision.classify((SELECT image FROM swatches "
                            "WHERE name = 'red'), top_k := 5)").fetchall()
            vectors = con.execute("SELECT vision.embed(image) FROM swatches "
                                  "WHERE name = 'gray'").fetchone()
            assert vectors is not None and len(vectors[0]) == 3
            assert np.allclose(vectors[0], [3 ** -0.5] * 3, atol=1e-3)
        finally:
            vgi_vision.detach(con)

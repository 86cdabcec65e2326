"""Normalization folded into the ONNX graph gives what normalizing in numpy gave.

The reference is a plain onnxruntime session on the model file as shipped, fed the float
tensor the metadata describes (pixels minus mean, over std, in the declared layout),
computed in numpy as the worker used to. The folded classifier must agree exactly on the
committed photographs and their variants, for the fp32 and the int8 model, and for a user
model with its own layout, normalization and an input name the folding would have used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.images import FIXTURES, photo_variants
from vgi_vision.errors import ModelError
from vgi_vision.worker.vision.folding import PIXELS_INPUT, folded_model
from vgi_vision.worker.vision.imaging import decode
from vgi_vision.worker.vision.model import Classifier, softmax
from vgi_vision.worker.vision.model_files import ModelInfo, models_root


def numpy_normalized(info: ModelInfo, pixels: np.ndarray) -> np.ndarray:
    """The float input as the metadata describes it, computed in numpy."""
    layout = (0, 3, 1, 2) if info.layout == "NCHW" else (0, 1, 2, 3)
    batch = np.ascontiguousarray(pixels.transpose(layout), dtype=np.float32)
    batch -= info.mean
    batch /= info.std
    return batch


def unfolded_outputs(info: ModelInfo, pixels: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(info.onnx_file), providers=["CPUExecutionProvider"])
    names = [n for n in (info.logits_output, info.embedding_output) if n]
    return session.run(names, {info.input_name: numpy_normalized(info, pixels)})


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    """The committed photographs and fixed variants of each (crops, mirror, re-encodes)."""
    return list(photo_variants(FIXTURES).values())


@pytest.mark.parametrize("model", ["efficientnet-lite0", "efficientnet-lite0-int8"])
def test_shipped_models_give_the_same_results_on_real_photos(model, photos):
    info = ModelInfo.load(models_root() / model)
    classifier = Classifier(info)
    pixels = np.stack([decode(p, prep=info.prep) for p in photos])
    probabilities, embeddings = classifier.run(pixels)
    logits, embedding = unfolded_outputs(info, pixels)
    expected = softmax(logits)
    assert len(photos) >= 40
    assert (probabilities.argmax(axis=1) == expected.argmax(axis=1)).all()
    # The same float32 operations in the same order: measured identical (0.0); the tolerance
    # only leaves room for an onnxruntime that fuses the prepended nodes differently.
    assert np.abs(probabilities - expected).max() <= 1e-6
    unit = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    assert np.abs(embeddings - unit).max() <= 1e-5


SIZE = 8


def nhwc_model(input_name: str) -> onnx.ModelProto:
    """NHWC float input -> per-channel means (embedding) and a linear score of them (logits).

    An intermediate tensor is named like the folded input, so the folding must pick another.
    """
    weights = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [input_name, "axes"], [PIXELS_INPUT], keepdims=0),
         helper.make_node("Identity", [PIXELS_INPUT], ["means"]),
         helper.make_node("MatMul", ["means", "weights"], ["scores"])],
        "nhwc", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                               ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("means", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
         numpy_helper.from_array(weights, "weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def model_dir(folder: Path, input_name: str) -> Path:
    folder.mkdir()
    data = nhwc_model(input_name).SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    (folder / "labels.tsv").write_text("idx\tlabel\n0\tone\n1\ttwo\n")
    (folder / "metadata.json").write_text(json.dumps({
        "name": "nhwc-means", "sha256": hashlib.sha256(data).hexdigest(), "license": "CC0-1.0",
        "input": {"name": input_name, "layout": "NHWC", "size": [SIZE, SIZE],
                  "normalization": {"mean": [123.675, 116.28, 103.53],
                                    "std": [58.395, 57.12, 57.375]}},
        "outputs": {"logits": "scores", "embedding": "means"}, "embedding_dim": 3}))
    return folder


def test_a_user_model_with_its_own_layout_normalization_and_names(tmp_path):
    info = ModelInfo.load(model_dir(tmp_path / "user", "input"))
    pixels = np.random.default_rng(5).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    probabilities, embeddings = Classifier(info).run(pixels)
    logits, means = unfolded_outputs(info, pixels)
    assert np.array_equal(probabilities, softmax(logits))
    assert np.array_equal(embeddings, means / np.linalg.norm(means, axis=1, keepdims=True))


def test_the_folded_input_takes_uint8_pixels_under_a_name_of_its_own(tmp_path):
    info = ModelInfo.load(model_dir(tmp_path / "user", "input"))
    folded, feed = folded_model(info.onnx_file, info.input_name, info.layout, SIZE,
                                info.mean, info.std)
    assert feed != PIXELS_INPUT  # the graph already has a tensor of that name
    (graph_input,) = ort.InferenceSession(folded, providers=["CPUExecutionProvider"]
                                          ).get_inputs()
    assert (graph_input.name, graph_input.type) == (feed, "tensor(uint8)")
    assert graph_input.shape == ["batch", SIZE, SIZE, 3]


def test_folding_a_graph_without_the_named_input_is_a_model_error(tmp_path):
    info = ModelInfo.load(model_dir(tmp_path / "user", "input"))
    with pytest.raises(ModelError, match="has no input 'pixels'"):
        folded_model(info.onnx_file, "pixels", info.layout, SIZE, info.mean, info.std)

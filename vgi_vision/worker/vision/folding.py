"""A model's input normalization moved into its ONNX graph: uint8 pixels in.

``metadata.json`` says how a model wants its input: pixels laid out NCHW or NHWC, minus
``mean``, divided by ``std``, as float32. Doing that in numpy costs a strided pass and a
float copy of every batch on the one thread that also feeds the model (as much time per
image as decoding it, on the machines this was measured on: ``bench/bench_profile.py``).
Prepended to the graph instead (Cast, Transpose, Sub, Div), it runs inside onnxruntime on
its own threads, the session is fed the decoded ``N x H x W x 3`` uint8 batch as it is, and
the values the original graph sees are the same float32 operations in the same order: the
outputs are bit-identical to normalizing in numpy.

Applied at load time to every model, shipped or a user's, so the files on disk stay those
the metadata's sha256 describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vgi_vision.errors import ModelError

#: Name of the uint8 input of a folded graph (made unique if the graph already uses it).
PIXELS_INPUT = "vgi_pixels"


def folded_model(onnx_file: Path, input_name: str, layout: str, size: int,
                 mean: np.ndarray, std: np.ndarray) -> tuple[bytes, str]:
    """The serialized graph with a uint8 ``N x size x size x 3`` input normalized inside it,
    and that input's name. ``input_name``: the float input it replaces (the graph's own)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    try:
        model = onnx.load(str(onnx_file))  # with any external weights, inlined
    except Exception as exc:  # protobuf raises its own untyped errors
        raise ModelError(f"{onnx_file} is not a readable ONNX graph: {exc}") from exc
    graph = model.graph
    original = next((i for i in graph.input if i.name == input_name), None)
    if original is None:
        raise ModelError(f"{onnx_file} has no input {input_name!r}")
    taken = _names(graph)
    pixels = _unique(PIXELS_INPUT, taken)
    floats, centred, mean_name, std_name = (_unique(f"{pixels}_{part}", taken)
                                            for part in ("float", "centred", "mean", "std"))
    nodes = [helper.make_node("Cast", [pixels], [floats], to=TensorProto.FLOAT)]
    shape = (1, 1, 1, 3)
    if layout == "NCHW":
        laid_out = _unique(f"{pixels}_nchw", taken)
        nodes.append(helper.make_node("Transpose", [floats], [laid_out], perm=[0, 3, 1, 2]))
        floats, shape = laid_out, (1, 3, 1, 1)
    nodes += [helper.make_node("Sub", [floats, mean_name], [centred]),
              helper.make_node("Div", [centred, std_name], [input_name])]
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(mean, np.float32).reshape(shape), mean_name),
        numpy_helper.from_array(np.asarray(std, np.float32).reshape(shape), std_name)])
    index = list(graph.input).index(original)
    graph.input.remove(original)
    graph.input.insert(index, helper.make_tensor_value_info(
        pixels, TensorProto.UINT8, [_batch_dim(original), size, size, 3]))
    for position, node in enumerate(nodes):
        graph.node.insert(position, node)
    return model.SerializeToString(), pixels


def normalized_input(layout: str, mean: np.ndarray, std: np.ndarray, pixels: np.ndarray
                     ) -> np.ndarray:
    """``N x H x W x 3`` uint8 pixels as the float tensor the graph *as shipped* takes, in
    numpy: what the folded graph computes itself. For tools that feed the original graph
    (calibrating a quantized copy, the benches' raw baseline)."""
    order = (0, 3, 1, 2) if layout == "NCHW" else (0, 1, 2, 3)
    batch = np.ascontiguousarray(pixels.transpose(order), dtype=np.float32)
    batch -= mean
    batch /= std
    return batch


def _batch_dim(value_info: Any) -> int | str:
    """The original input's batch dimension (a fixed size or a symbol), else ``"N"``."""
    dims = value_info.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value"):
        return int(dims[0].dim_value)
    if dims and dims[0].dim_param:
        return str(dims[0].dim_param)
    return "N"


def _names(graph: Any) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate

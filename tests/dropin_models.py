"""ONNX models a user might drop into the repository, built here with onnx's helper API (no torch):
a bank-churn network and a small cat-or-not CNN, with seeded random weights, plus graphs that
are wrong in the ways a drop-in can be (see tests/test_serve_your_own_model.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHURN_FEATURES = (
    11  # credit score, geography (2), gender, age, tenure, balance, products, card, active, salary
)
IMAGE_SIDE = 32


def _weights(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    scale = 1 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """The graph as a checked model that this onnxruntime reads (opset 17, IR version 8)."""
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built.ir_version = 8
    onnx.checker.check_model(built, full_check=True)
    return built


def _save(graph: onnx.GraphProto, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model(graph), folder / "model.onnx")
    return folder / "model.onnx"


def churn_graph(seed: int = 0, fail_above: float | None = None, padding: int = 0) -> onnx.GraphProto:
    """11 customer features -> Dense 6 ReLU -> Dense 6 ReLU -> Dense 1 sigmoid (probability of
    leaving). `fail_above`: the graph raises at run time when any input exceeds it (a Reshape to
    width 8, computed from the input), yet warms up on zeros: a shadow that fails on live traffic.
    `padding`: that many unused weights, to make the file larger."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gemm", ["customer", "w1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["churn" if fail_above is None else "probability"]),
    ]
    initializers = [
        _weights(rng, "w1", CHURN_FEATURES, 6),
        _weights(rng, "b1", 6),
        _weights(rng, "w2", 6, 6),
        _weights(rng, "b2", 6),
        _weights(rng, "w3", 6, 1),
        _weights(rng, "b3", 1),
    ]
    if fail_above is not None:
        nodes += [
            helper.make_node("ReduceMax", ["customer"], ["largest"], keepdims=0),
            helper.make_node("Greater", ["largest", "limit"], ["over"]),
            helper.make_node("Cast", ["over"], ["flag"], to=TensorProto.INT64),
            helper.make_node("Mul", ["flag", "seven"], ["extra"]),
            helper.make_node("Add", ["one", "extra"], ["width"]),
            helper.make_node("Concat", ["minus_one", "width"], ["shape"], axis=0),
            helper.make_node("Reshape", ["probability", "shape"], ["churn"]),
        ]
        initializers += [
            numpy_helper.from_array(np.asarray(fail_above, np.float32), "limit"),
            numpy_helper.from_array(np.asarray([1], np.int64), "one"),
            numpy_helper.from_array(np.asarray(7, np.int64), "seven"),
            numpy_helper.from_array(np.asarray([-1], np.int64), "minus_one"),
        ]
    if padding:
        initializers.append(numpy_helper.from_array(np.zeros(padding, np.float32), "padding"))
    return helper.make_graph(
        nodes,
        "bank_churn",
        [helper.make_tensor_value_info("customer", TensorProto.FLOAT, ["batch", CHURN_FEATURES])],
        [helper.make_tensor_value_info("churn", TensorProto.FLOAT, ["batch", 1])],
        initializer=initializers,
    )


def cat_graph(seed: int = 1, dynamic_side: bool = False) -> onnx.GraphProto:
    """An RGB image -> Conv 8 3x3 ReLU -> MaxPool 2 -> Conv 16 3x3 ReLU -> global average ->
    Dense 1 sigmoid (probability of a cat). `dynamic_side`: any image size, which a warm-up on
    a 1x1 image of zeros cannot run (the first convolution needs 3x3): it needs an example."""
    rng = np.random.default_rng(seed)
    side: int | str = "height" if dynamic_side else IMAGE_SIDE
    width: int | str = "width" if dynamic_side else IMAGE_SIDE
    return helper.make_graph(
        [
            helper.make_node("Conv", ["image", "k1", "c1"], ["f1"]),  # unpadded: needs 3x3 at least
            helper.make_node("Relu", ["f1"], ["r1"]),
            helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Conv", ["p1", "k2", "c2"], ["f2"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["f2"], ["r2"]),
            helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"]),
            helper.make_node("Gemm", ["features", "w", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["cat"]),
        ],
        "cat_or_not",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, side, width])],
        [helper.make_tensor_value_info("cat", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            _weights(rng, "k1", 8, 3, 3, 3),
            _weights(rng, "c1", 8),
            _weights(rng, "k2", 16, 8, 3, 3),
            _weights(rng, "c2", 16),
            _weights(rng, "w", 16, 1),
            _weights(rng, "b", 1),
        ],
    )


def text_graph() -> onnx.GraphProto:
    """A graph that takes strings: a datatype the service does not serve."""
    return helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])],
    )


def spin_graph() -> onnx.GraphProto:
    """[batch, 1] -> the same: the first value is also how many times a loop of small matrix
    products runs, so zeros (the warm-up) take microseconds and 1e6 takes seconds; a drop-in
    whose run time its input sets."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["carried", "w"], ["product"]),
            helper.make_node("Tanh", ["product"], ["carried_out"]),
            helper.make_node("Identity", ["go_in"], ["go_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("go_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried", TensorProto.FLOAT, [1, 64]),
        ],
        [
            helper.make_tensor_value_info("go_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, [1, 64]),
        ],
    )
    return helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["most"], keepdims=0),
            helper.make_node("Cast", ["most"], ["trips"], to=TensorProto.INT64),
            helper.make_node("Loop", ["trips", "true", "start"], ["end"], body=body),
            helper.make_node("ReduceSum", ["end"], ["total"], keepdims=1),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["x", "nothing"], ["y"]),
        ],
        "spin_by_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(np.full((64, 64), 1 / 64, np.float32), "w"),
            numpy_helper.from_array(np.array(True), "true"),
            numpy_helper.from_array(np.ones((1, 64), np.float32), "start"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )


def filler_graph() -> onnx.GraphProto:
    """[1, 1] -> [1, n] of ones, n the input's value (ConstantOfShape): a drop-in whose output size,
    memory and run time its input sets; zeros (the warm-up) make an empty output."""
    return helper.make_graph(
        [
            helper.make_node("Cast", ["n"], ["count"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["count", "flat"], ["width"]),
            helper.make_node("Concat", ["flat", "width"], ["shape"], axis=0),
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                ["ones"],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            ),
        ],
        "filler",
        [helper.make_tensor_value_info("n", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("ones", TensorProto.FLOAT, [1, "n"])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "flat")],
    )


def wide_input_graph(width: int = 2**27) -> onnx.GraphProto:
    """A fixed [1, width] float input passed through: a file of a hundred bytes whose warm-up on
    zeros would take 4 x width bytes for the input and as many for the output."""
    return helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
    )


def save(graph: onnx.GraphProto, folder: Path, card: dict[str, Any] | None = None) -> Path:
    """`folder/model.onnx`, and `folder/card.json` if a card is given."""
    path = _save(graph, folder)
    if card is not None:
        (folder / "card.json").write_text(json.dumps(card))
    return path


def v2_request(name: str, tensor: np.ndarray) -> dict[str, Any]:
    """The Open Inference Protocol request carrying `tensor` as input `name`."""
    return {
        "inputs": [
            {"name": name, "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.ravel().tolist()}
        ]
    }

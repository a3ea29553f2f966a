"""A models folder with one slow model: the tests of deadlines, overload and shutdown need
inference that takes a known while, served through the path a slow model really takes (the
inference thread, batching, the deadline timer), not a sleep inside the server.

The slow graph is the committed one plus a loop of matrix products that depends on the
input (so onnxruntime cannot fold it away at load) and is multiplied by 0 into the answer: the
answers are the committed model's, each call takes at least about the time asked for (more on a
busy machine), whatever its batch size. Made with the onnx helper API, timed on this machine."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from support.server import MODELS_DIR

SlowModels = Callable[..., Path]
"""The `slow_models` fixture: (milliseconds per call, model name="wine") -> a models folder."""

_SIDE = 256  # the loop multiplies a 64 x 256 matrix by a 256 x 256 one: about 4 M multiply-adds


def _slow_graph(committed: onnx.ModelProto, iterations: int) -> onnx.ModelProto:
    graph = committed.graph
    (first, *_) = [i.name for i in graph.input]
    (answer,) = [o.name for o in graph.output]
    for node in graph.node:  # the committed answer goes on under another name
        node.output[:] = [f"{name}_committed" if name == answer else name for name in node.output]
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((_SIDE, _SIDE)) / np.sqrt(_SIDE)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["spin_in", "spin_weights"], ["spin_product"]),
            helper.make_node("Tanh", ["spin_product"], ["spin_out"]),
            helper.make_node("Identity", ["spin_cond_in"], ["spin_cond_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("spin_i", TensorProto.INT64, []),
            helper.make_tensor_value_info("spin_cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("spin_in", TensorProto.FLOAT, [64, _SIDE]),
        ],
        [
            helper.make_tensor_value_info("spin_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("spin_out", TensorProto.FLOAT, [64, _SIDE]),
        ],
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(weights, "spin_weights"),
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "spin_iterations"),
            numpy_helper.from_array(np.array(True), "spin_true"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "spin_zero"),
            numpy_helper.from_array(np.array([64, _SIDE], dtype=np.int64), "spin_shape"),
        ]
    )
    graph.node.extend(
        [
            # A start matrix of ones that depends on the input: nothing here can be precomputed.
            helper.make_node("ReduceSum", [first], ["spin_seed"], keepdims=0),
            helper.make_node("Mul", ["spin_seed", "spin_zero"], ["spin_zero_seed"]),
            helper.make_node("Exp", ["spin_zero_seed"], ["spin_one"]),
            helper.make_node("Expand", ["spin_one", "spin_shape"], ["spin_start"]),
            helper.make_node("Loop", ["spin_iterations", "spin_true", "spin_start"], ["spin_end"], body=body),
            helper.make_node("ReduceSum", ["spin_end"], ["spin_total"], keepdims=0),
            helper.make_node("Mul", ["spin_total", "spin_zero"], ["spin_nothing"]),
            helper.make_node("Add", [f"{answer}_committed", "spin_nothing"], [answer]),
        ]
    )
    onnx.checker.check_model(committed)
    return committed


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A session as the service makes one (NNSERVE_INTRA_OP_THREADS defaults to 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _seconds_per_call(model: onnx.ModelProto, calls: int = 9) -> float:
    """The fastest of a few calls: on a busy machine the mean is inflated by whatever else runs,
    which would make the slow model faster than asked once the machine is quiet again. From the
    fastest, the model takes at least the time asked, and longer when the machine is busy."""
    slow = session(model)
    first = slow.get_inputs()[0]
    feeds = {first.name: np.zeros([d if isinstance(d, int) else 1 for d in first.shape], dtype=np.float32)}
    slow.run(None, feeds)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        slow.run(None, feeds)
        times.append(time.perf_counter() - started)
    return min(times)


def slow_graph(milliseconds: float, name: str = "wine", version: int = 1) -> onnx.ModelProto:
    """A committed graph, taking about `milliseconds` per call on this machine when it is quiet."""
    committed = MODELS_DIR / name / str(version) / "model.onnx"
    probe = 20
    per_iteration = _seconds_per_call(_slow_graph(onnx.load(committed), probe)) / probe
    iterations = max(1, round(milliseconds / 1000 / per_iteration))
    return _slow_graph(onnx.load(committed), iterations)


def slow_models(folder: Path, milliseconds: float, name: str = "wine") -> Path:
    """`folder`/models: the committed models, with every version of `name` made slow (cards,
    samples and the rest as committed). Readable by any user, for a container to mount it."""
    models = folder / "models"
    shutil.copytree(MODELS_DIR, models, ignore=shutil.ignore_patterns("*.png"))
    for version in (models / name).iterdir():
        if (version / "model.onnx").is_file():
            onnx.save(slow_graph(milliseconds, name, int(version.name)), version / "model.onnx")
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models

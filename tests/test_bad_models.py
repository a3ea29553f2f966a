"""Broken model versions in the repository, one way each: every one is reported by /ready with a
reason that names the problem, its endpoint answers 503 saying why, and the other models keep
serving. (A model file that is not ONNX at all takes the truncated file's path.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from support.server import MODELS_DIR, StartServer

PREDICTIONS = {
    "wine": {"guests": ["Stiffy"]},
    "spam": {"text": "Lunch tomorrow?"},
    "digit": {"pixels": [0.0] * 784},
}


def _truncate(folder: Path) -> None:
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _edit_card(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    card = json.loads((folder / "card.json").read_text())
    edit(card)
    (folder / "card.json").write_text(json.dumps(card))


def _rename_card_input(folder: Path) -> None:
    _edit_card(folder, lambda card: card["inputs"][0].update(name="not_the_graph_input"))


def _claim_three_classes(folder: Path) -> None:
    _edit_card(folder, lambda card: card["outputs"][0].update(shape=[-1, 3]))


def _turn_off_an_unlisted_optimiser(folder: Path) -> None:
    """A card may turn off only the optimisers the service knows to keep the outputs the same."""
    _edit_card(folder, lambda card: card.update(session={"disabled_optimizers": ["ConstantFolding"]}))


def _const(name: str, values: object, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _graph_lying_about_its_output(folder: Path) -> None:
    """A digit graph that declares the card's [batch, 10] output but computes [batch, 5]. The
    5 is computed from the input, so no shape inference can see through it: only running the
    graph (the warm-up) tells."""
    card = json.loads((folder / "card.json").read_text())
    image, probabilities = card["inputs"][0], card["outputs"][0]
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", [image["name"], "flat"], ["rows"]),
            helper.make_node("MatMul", ["rows", "weights"], ["logits"]),
            helper.make_node("ReduceMin", [image["name"]], ["low"], keepdims=0),
            helper.make_node("Mul", ["low", "zero"], ["nothing"]),
            helper.make_node("Cast", ["nothing"], ["offset"], to=TensorProto.INT64),
            helper.make_node("Add", ["five", "offset"], ["end"]),
            helper.make_node("Slice", ["logits", "start", "end", "axis"], [probabilities["name"]]),
        ],
        "lying_output",
        [helper.make_tensor_value_info(image["name"], TensorProto.FLOAT, ["batch", *image["shape"][1:]])],
        [helper.make_tensor_value_info(probabilities["name"], TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            _const("weights", np.zeros((784, 10)), np.float32),
            _const("flat", [-1, 784], np.int64),
            _const("zero", 0.0, np.float32),
            _const("five", [5], np.int64),
            _const("start", [0], np.int64),
            _const("axis", [1], np.int64),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, folder / "model.onnx")


BREAKAGES: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("truncated onnx", _truncate, "spam", "Protobuf parsing failed"),
    ("card input name", _rename_card_input, "wine", "not_the_graph_input"),
    ("card output shape", _claim_three_classes, "spam", "card outputs"),
    ("graph output shape", _graph_lying_about_its_output, "digit", "has shape [1, 5] on warm-up"),
    ("card session optimiser", _turn_off_an_unlisted_optimiser, "wine", "session.disabled_optimizers"),
]


@pytest.mark.parametrize(("what", "breakage", "name", "reason"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_a_broken_model_is_reported_and_the_others_serve(
    start_server: StartServer,
    tmp_path: Path,
    what: str,
    breakage: Callable[[Path], None],
    name: str,
    reason: str,
) -> None:
    models = tmp_path / "models"
    for model in ("wine", "spam", "digit"):  # version 1 of each: no other version can stand in
        shutil.copytree(
            MODELS_DIR / model / "1", models / model / "1", ignore=shutil.ignore_patterns("samples.json")
        )
    version = models / name / "1"
    breakage(version)
    server = start_server(NNSERVE_MODELS_DIR=str(models), wait_ready=False)
    with server.client() as http:
        ready = http.get("/ready")
        failing = {key: state for key, state in ready.json()["models"].items() if state != "ready"}
        print(f"\n{what}: /ready {ready.status_code} says {failing}")
        assert ready.status_code == 503
        assert list(failing) == [f"{name}/{version.name}"] and reason in failing[f"{name}/{version.name}"]
        refused = http.post(f"/predict/{name}", json=PREDICTIONS[name])
        assert refused.status_code == 503 and name in refused.json()["error"]
        assert reason in refused.json()["error"]
        for other in set(PREDICTIONS) - {name}:
            assert http.post(f"/predict/{other}", json=PREDICTIONS[other]).status_code == 200, other
    assert f"model {name} version {version.name} failed to load" in server.wait_for_log("failed to load")

"""Broken model versions in the repository: each is reported by /ready with a clear reason, and
the other models keep serving."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import MODELS_DIR, StartServer
from test_model_faults import PREDICTIONS


def _version_dir(models: Path, name: str) -> Path:
    return max((p for p in (models / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _truncate(folder: Path) -> None:
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _rename_card_input(folder: Path) -> None:
    card = json.loads((folder / "card.json").read_text())
    card["inputs"][0]["name"] = "not_the_graph_input"
    (folder / "card.json").write_text(json.dumps(card))


def _remove_card(folder: Path) -> None:
    (folder / "card.json").unlink()


def _graph_with_wrong_output_shape(folder: Path) -> None:
    """A digit graph that declares [N, 10] probabilities but computes [N, 5]."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [784, 5], [0.0] * 784 * 5)
    shape = helper.make_tensor("flat", TensorProto.INT64, [2], [-1, 784])
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "flat"], ["rows"]),
            helper.make_node("MatMul", ["rows", "w"], ["probabilities"]),
        ],
        "wrong_output",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weights, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")


BREAKAGES: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("truncated onnx", _truncate, "spam", "Protobuf parsing failed"),
    ("card input name", _rename_card_input, "wine", "not_the_graph_input"),
    ("missing card", _remove_card, "spam", "card.json"),
    ("wrong output shape", _graph_with_wrong_output_shape, "digit", "card outputs"),
]


@pytest.mark.parametrize(("what", "breakage", "name", "reason"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_a_broken_model_is_reported_and_the_others_serve(
    start_server: StartServer, tmp_path: Path, what: str,
    breakage: Callable[[Path], None], name: str, reason: str,
) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models, ignore=shutil.ignore_patterns("*.png", "README.md"))
    breakage(_version_dir(models, name))
    server = start_server(NNSERVE_MODELS_DIR=str(models), wait_ready=False)
    with server.client() as http:
        ready = http.get("/ready")
        assert ready.status_code == 503
        failing = {key: state for key, state in ready.json()["models"].items() if state != "ready"}
        print(f"\n{what}: /ready says {failing}")
        assert [key.split("/")[0] for key in failing] == [name]
        assert reason in next(iter(failing.values()))
        assert http.post(f"/predict/{name}", json=PREDICTIONS[name]).status_code == 503
        for other in set(PREDICTIONS) - {name}:
            assert http.post(f"/predict/{other}", json=PREDICTIONS[other]).status_code == 200

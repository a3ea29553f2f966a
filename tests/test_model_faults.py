"""One broken model never takes the others down: it is reported by /ready and its endpoint
answers 503 with the reason, while the others keep serving."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import MODELS_DIR, StartServer

PREDICTIONS = {
    "wine": {"guests": ["Stiffy"]},
    "spam": {"text": "Lunch tomorrow?"},
    "digit": {"pixels": [0.0] * 784},
}


def _repository_with_corrupt(tmp_path: Path, name: str) -> Path:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models, ignore=shutil.ignore_patterns("*.png", "README.md"))
    (next((models / name).glob("*/model.onnx"))).write_bytes(b"\x08\x01 this is not onnx")
    return models


def test_a_corrupt_model_is_named_by_ready_and_the_rest_serve(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(
        NNSERVE_MODELS_DIR=str(_repository_with_corrupt(tmp_path, "digit")), wait_ready=False
    )
    with server.client() as http:
        ready = http.get("/ready")
        assert ready.status_code == 503
        states = ready.json()["models"]
        broken = [key for key, state in states.items() if state != "ready"]
        assert [key.split("/")[0] for key in broken] == ["digit"]
        digit = http.post("/predict/digit", json=PREDICTIONS["digit"])
        assert digit.status_code == 503 and "digit" in digit.json()["error"]
        for name in ("wine", "spam"):
            assert http.post(f"/predict/{name}", json=PREDICTIONS[name]).status_code == 200
    assert "failed to load" in server.wait_for_log("failed to load")

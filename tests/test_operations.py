"""An operator (or an orchestrator) checks the service: liveness, readiness, models, logs."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from support.server import REPO, Server


def test_health_answers(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_lists_every_model_ready(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert {key.split("/")[0] for key in body["models"]} == {"wine", "spam", "digit"}
    assert set(body["models"].values()) == {"ready"}


def test_models_show_tensors_and_metrics_from_the_cards(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/models").json()}
    assert set(models) == {"wine", "spam", "digit"}
    digit = client.get("/models/digit").json()
    assert digit == models["digit"]
    latest = digit["versions"][-1]
    assert latest["ready"] and digit["latest_ready_version"] == latest["version"]
    assert latest["inputs"] == [{"name": "image", "dtype": "float32", "shape": [-1, 1, 28, 28]}]
    assert latest["metrics"]["accuracy"] >= 0.99
    assert latest["labels"] == [str(d) for d in range(10)]


def test_an_unknown_model_is_404(client: httpx.Client) -> None:
    response = client.get("/models/cat")
    assert response.status_code == 404 and "cat" in response.json()["error"]


@pytest.mark.smoke
def test_request_id_is_returned_and_logged(server: Server) -> None:
    with server.client() as client:
        given = client.get("/health", headers={"X-Request-ID": "trace-abc-123"})
        made = client.post("/predict/wine", json={"guests": ["Stiffy"]}).headers["X-Request-ID"]
    assert given.headers["X-Request-ID"] == "trace-abc-123"
    assert len(made) == 32
    lines = [json.loads(line) for line in server.wait_for_log(made).splitlines() if line.startswith("{")]
    access = {line.get("request_id"): line for line in lines if line["logger"] == "nnserve.access"}
    assert access["trace-abc-123"]["path"] == "/health"
    logged = access[made]
    assert (logged["method"], logged["path"], logged["status"]) == ("POST", "/predict/wine", 200)
    assert logged["latency_ms"] > 0


def test_docs_offer_an_example_for_every_endpoint(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for path in ("/predict/wine", "/predict/spam", "/predict/digit"):
        ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        examples = schemas[ref["schema"]["$ref"].rsplit("/", 1)[1]]["examples"]
        for example in examples:
            assert client.post(path, json=example).status_code == 200, (path, example)
    assert client.get("/docs").status_code == 200


def test_the_service_never_imports_torch() -> None:
    code = "import sys, service.app; service.app.create_app(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

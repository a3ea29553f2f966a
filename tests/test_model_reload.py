"""An operator adds a model version and loads it without downtime, or unloads a model, through
the V2 model repository extension."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from conftest import MODELS_DIR, Server, StartServer

KEY = "admin-key-3c1e"
ADMIN = {"Authorization": f"Bearer {KEY}"}
INFER = {"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 1, 1] + [0] * 7}]}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models, ignore=shutil.ignore_patterns("*.png", "README.md", "samples.json"))
    return models


def _add_version(models: Path, name: str, version: int) -> None:
    source = models / name / "1"
    target = models / name / str(version)
    shutil.copytree(source, target)
    card = json.loads((target / "card.json").read_text())
    card["version"] = version
    (target / "card.json").write_text(json.dumps(card))


def test_a_new_version_loads_under_load_without_a_failed_request(
    start_server: StartServer, repository: Path
) -> None:
    server = start_server(NNSERVE_MODELS_DIR=str(repository), NNSERVE_API_KEY=KEY)
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with server.client(headers=ADMIN) as http:
            while not stop.is_set() and len(statuses) < 20_000:
                response = http.post("/v2/models/wine/infer", json=INFER)
                statuses.append(response.status_code)
                versions.append(response.json().get("model_version", "?"))

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        with server.client(headers=ADMIN) as http:
            while len(statuses) < 50:
                threading.Event().wait(0.01)
            _add_version(repository, "wine", 2)
            loaded = http.post("/v2/repository/models/wine/load")
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["versions"] == {"1": "READY", "2": "READY"}
            seen = len(statuses)
            while len(statuses) < seen + 50:
                threading.Event().wait(0.01)
    finally:
        stop.set()
        worker.join(30)
    print(f"\nreload under load: {len(statuses)} infers, {statuses.count(200)} x 200, "
          f"{versions.count('1')} on v1, {versions.count('2')} on v2")
    assert set(statuses) == {200}
    assert versions[-1] == "2" and "1" in versions
    with server.client(headers=ADMIN) as http:
        assert http.post("/predict/wine", json={"guests": []}).json()["model"]["version"] == 2
        assert http.post("/predict/wine?version=1", json={"guests": []}).json()["model"]["version"] == 1
        index = http.post("/v2/repository/index").json()
        assert {(m["name"], m["version"], m["state"]) for m in index} >= {("wine", "2", "READY")}


def test_an_unloaded_model_is_404_and_the_others_serve(start_server: StartServer, repository: Path) -> None:
    server = start_server(NNSERVE_MODELS_DIR=str(repository), NNSERVE_API_KEY=KEY)
    with server.client(headers=ADMIN) as http:
        assert http.post("/v2/repository/models/spam/unload").json()["state"] == "UNLOADED"
        assert http.post("/predict/spam", json={"text": "hello"}).status_code == 404
        assert http.get("/v2/models/spam").status_code == 404
        assert http.post("/predict/wine", json={"guests": []}).status_code == 200
        assert http.post("/predict/digit", json={"pixels": [0.0] * 784}).status_code == 200
        assert http.get("/ready").status_code == 200
        assert http.post("/v2/repository/models/spam/load").status_code == 200
        assert http.post("/predict/spam", json={"text": "hello"}).status_code == 200
        assert http.post("/v2/repository/models/cat/load").status_code == 404


def test_admin_endpoints_need_a_configured_and_given_key(server: Server, start_server: StartServer,
                                                         repository: Path) -> None:
    assert httpx.post(f"{server.url}/v2/repository/index").status_code == 403
    secured = start_server(NNSERVE_MODELS_DIR=str(repository), NNSERVE_API_KEY=KEY)
    assert httpx.post(f"{secured.url}/v2/repository/index").status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.post(f"{secured.url}/v2/repository/models/wine/unload", headers=wrong).status_code == 401
    assert httpx.get(f"{secured.url}/v2/models/wine").status_code == 200

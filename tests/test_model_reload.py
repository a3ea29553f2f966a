"""An operator adds a model version and loads it without downtime, or unloads a model, through
the V2 model repository extension, as often as they like: memory does not grow with reloads."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import onnx
import pytest
from onnx import numpy_helper

from support.server import MODELS_DIR, Server, StartServer

KEY = "admin-key-3c1e"
ADMIN = {"Authorization": f"Bearer {KEY}"}
INFER = {"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 1, 1] + [0] * 7}]}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR, models, ignore=shutil.ignore_patterns("*.png", "README.md", "samples.json"))
    return models


def _add_wine_version(models: Path, version: int) -> None:
    """A new wine version that is a genuinely different model: version 1 with one more bottle
    added by its last layer's bias, so its answers tell which session served a request."""
    target = models / "wine" / str(version)
    shutil.copytree(models / "wine" / "1", target)
    graph = onnx.load(target / "model.onnx")
    last = [node for node in graph.graph.node if node.op_type == "Gemm"][-1]
    bias = next(init for init in graph.graph.initializer if init.name == last.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1, bias.name))
    onnx.save(graph, target / "model.onnx")
    card = json.loads((target / "card.json").read_text())
    card["version"] = version
    (target / "card.json").write_text(json.dumps(card))


def test_a_new_version_loads_under_load_without_a_failed_request(
    start_server: StartServer, repository: Path
) -> None:
    server = start_server(NNSERVE_MODELS_DIR=str(repository), NNSERVE_ADMIN_KEYS=KEY)
    statuses: list[int] = []
    answers: dict[str, set[float]] = {"1": set(), "2": set()}
    stop = threading.Event()

    def stream() -> None:
        with server.client(headers=ADMIN) as http:
            while not stop.is_set() and len(statuses) < 20_000:
                response = http.post("/v2/models/wine/infer", json=INFER)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answer = response.json()
                    answers[answer["model_version"]].add(answer["outputs"][0]["data"][0])

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        with server.client(headers=ADMIN) as http:
            while len(statuses) < 50:
                threading.Event().wait(0.01)
            _add_wine_version(repository, 2)
            loaded = http.post("/v2/repository/models/wine/load")
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["versions"] == {"1": "READY", "2": "READY"}
            seen = len(statuses)
            while len(statuses) < seen + 50:
                threading.Event().wait(0.01)
    finally:
        stop.set()
        worker.join(30)
    print(f"\nreload under load: {len(statuses)} infers, {statuses.count(200)} x 200, answers {answers}")
    assert set(statuses) == {200}
    assert answers["1"] and answers["2"]  # both sessions answered: the old before, the new after
    assert all(new == pytest.approx(old + 1, abs=1e-4) for new in answers["2"] for old in answers["1"])
    with server.client(headers=ADMIN) as http:
        latest = http.post("/predict/wine", json={"guests": ["Dahlia", "Stiffy"]}).json()
        pinned = http.post("/predict/wine?version=1", json={"guests": ["Dahlia", "Stiffy"]}).json()
        assert latest["model"]["version"] == 2 and pinned["model"]["version"] == 1
        assert latest["bottles"] == pytest.approx(pinned["bottles"] + 1, abs=1e-3)
        index = http.post("/v2/repository/index").json()
        assert {(m["name"], m["version"], m["state"]) for m in index} >= {("wine", "2", "READY")}


def test_an_unloaded_model_is_404_and_the_others_serve(start_server: StartServer, repository: Path) -> None:
    server = start_server(NNSERVE_MODELS_DIR=str(repository), NNSERVE_ADMIN_KEYS=KEY)
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


def test_admin_endpoints_need_a_configured_and_given_key(
    server: Server, start_server: StartServer, repository: Path
) -> None:
    assert httpx.post(f"{server.url}/v2/repository/index").status_code == 403
    secured = start_server(NNSERVE_MODELS_DIR=str(repository), NNSERVE_ADMIN_KEYS=KEY)
    assert httpx.post(f"{secured.url}/v2/repository/index").status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.post(f"{secured.url}/v2/repository/models/wine/unload", headers=wrong).status_code == 401
    assert httpx.get(f"{secured.url}/v2/models/wine").status_code == 200


RELOAD_CYCLES = 200
RELOAD_SECONDS_BOUND = 120
PIXELS = {"pixels": [0.0] * 784}


@pytest.mark.slow
def test_reloading_a_model_200_times_under_traffic_does_not_grow_memory(start_server: StartServer) -> None:
    """Each cycle unloads digit and loads it again (new sessions, built and warmed) while a client
    keeps asking digit and wine; between an unload and the next load digit is a documented 404."""
    server = start_server(NNSERVE_ADMIN_KEYS=KEY, NNSERVE_LOG_LEVEL="warning")
    statuses: dict[str, Counter[int]] = {"digit": Counter(), "wine": Counter()}
    stop = threading.Event()

    def light_traffic() -> None:
        with server.client() as http:
            while not stop.is_set():
                statuses["digit"][http.post("/predict/digit", json=PIXELS).status_code] += 1
                statuses["wine"][http.post("/predict/wine", json={"guests": []}).status_code] += 1
                time.sleep(0.01)

    client = threading.Thread(target=light_traffic)
    client.start()
    started = time.monotonic()
    try:
        with server.client(headers=ADMIN) as http:
            for cycle in range(RELOAD_CYCLES):
                assert http.post("/v2/repository/models/digit/unload").status_code == 200
                assert http.post("/v2/repository/models/digit/load").status_code == 200
                if cycle == 0:
                    after_first = server.status_kib() / 1024
    finally:
        stop.set()
        client.join(30)
    seconds = time.monotonic() - started
    after_all = server.status_kib() / 1024
    growth = (after_all - after_first) / after_first
    print(
        f"\n{RELOAD_CYCLES} unload/load cycles of digit in {seconds:.1f} s: RSS {after_first:.1f} MB after "
        f"the first, {after_all:.1f} MB after the last ({growth:+.1%}); answers {dict(statuses)}"
    )
    assert set(statuses["digit"]) <= {200, 404} and statuses["digit"][200] > 0
    assert set(statuses["wine"]) == {200}
    assert sum(statuses["wine"].values()) >= RELOAD_CYCLES // 4, "too little traffic to speak of"
    assert abs(growth) <= 0.10
    assert seconds < RELOAD_SECONDS_BOUND

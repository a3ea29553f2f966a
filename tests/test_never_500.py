"""A hostile client sends numbers Python cannot parse or tensors holding NaN, and an operator
drops broken model folders into the repository: every answer is a clear 4xx or a 503 that names
the model, the version and the reason, never a 500 and never a path of the server's disk."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from support.inprocess import MakeClient
from support.server import MODELS_DIR, StartServer

HUGE = "9" * 5000  # Python refuses to parse integers over 4,300 digits
WINE_ROW = [0.0] * 10


def _binary_wine(client: httpx.Client, row: np.ndarray, datatype: str) -> httpx.Response:
    blob = row.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "guests",
                    "shape": [1, 10],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    return client.post(
        "/v2/models/wine/infer",
        content=header + blob,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_binary_tensors_holding_nan_or_infinity_are_400_like_json_ones(
    client: httpx.Client, value: float
) -> None:
    row = np.zeros((1, 10), dtype="<f4")
    row[0, 3] = value
    response = _binary_wine(client, row, "FP32")
    assert response.status_code == 400, response.text
    assert "input 'guests'" in response.json()["error"] and "finite" in response.json()["error"]
    assert _binary_wine(client, np.zeros((1, 10), dtype="<f4"), "FP32").status_code == 200


HOSTILE: list[tuple[str, str, dict[str, str], str | bytes, int]] = [
    ("POST", f"/predict/wine?version={HUGE}", {}, '{"guests": []}', 404),
    ("POST", f"/v2/models/wine/versions/{HUGE}/infer", {}, json.dumps({"inputs": []}), 404),
    ("GET", f"/v2/models/wine/versions/{HUGE}/ready", {}, "", 404),
    ("POST", "/predict/digit", {}, '{"pixels": [' + ",".join([HUGE] * 784) + "]}", 413),
    ("POST", "/predict/digit", {}, '{"pixels": [' + ",".join(["1e999"] * 784) + "]}", 422),
    ("POST", "/predict/wine", {}, '{"guests": [' + HUGE + "]}", 400),
    (
        "POST",
        "/v2/models/wine/infer",
        {},
        '{"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": ['
        + ",".join([HUGE] * 10)
        + "]}]}",
        400,
    ),
    (
        "POST",
        "/v2/models/wine/infer",
        {},
        '{"inputs": [{"name": "guests", "shape": [' + HUGE + ', 10], "datatype": "FP32", "data": []}]}',
        400,
    ),
    ("POST", "/v2/models/wine/infer", {"Inference-Header-Content-Length": HUGE}, "{}", 400),
    (
        "POST",
        "/v2/models/wine/infer",
        {},
        '{"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", '
        '"parameters": {"binary_data_size": ' + HUGE + "}}]}",
        400,
    ),
    ("POST", "/predict/wine", {"X-Request-Timeout": "nan"}, '{"guests": []}', 400),
    # Headers that only bound what the server does: a huge timeout is capped at the server's
    # own, and an overlong request id is replaced by a new one; the prediction is answered.
    ("POST", "/predict/wine", {"X-Request-Timeout": HUGE}, '{"guests": []}', 200),
    ("POST", "/predict/wine", {"X-Request-Timeout": "1e999"}, '{"guests": []}', 200),
    ("POST", "/predict/wine", {"X-Request-ID": HUGE}, '{"guests": []}', 200),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"), HOSTILE, ids=[f"{h[1][:40]}" for h in HOSTILE]
)
def test_numbers_too_long_or_too_large_for_python_get_a_clear_answer(
    client: httpx.Client, method: str, path: str, headers: dict[str, str], body: str | bytes, status: int
) -> None:
    response = client.request(
        method, path, headers={"Content-Type": "application/json", **headers}, content=body or None
    )
    assert response.status_code == status, response.text[:300]
    assert len(response.text) < 2000, "the answer echoes a bounded part of the input"
    if status >= 400:
        assert response.json()["code"] and HUGE[:50] not in response.json()["error"]
    assert len(response.headers["X-Request-ID"]) <= 128


def test_a_content_length_with_thousands_of_digits_is_413(client: httpx.Client) -> None:
    response = client.post("/predict/wine", content=b"{}", headers={"Content-Length": HUGE})
    assert response.status_code == 413, response.text


LONG = "m" * 60_000
ADMIN = {"Authorization": "Bearer adm-names-4e1b"}


def _tensor(**changes: object) -> dict[str, object]:
    wine = {"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": WINE_ROW}
    return {"inputs": [wine | changes]}


@pytest.fixture(scope="module")
def admin(make_client: MakeClient) -> httpx.Client:
    return make_client(admin_keys=[ADMIN["Authorization"].split()[1]])


LONG_NAMES: list[tuple[str, str, object, int]] = [
    ("GET", f"/models/{LONG}", None, 404),
    ("GET", f"/v2/models/{LONG}", None, 404),
    ("GET", f"/v2/models/{LONG}/ready", None, 404),
    ("POST", f"/v2/models/{LONG}/infer", _tensor(), 404),
    ("POST", f"/v2/models/wine/versions/{LONG}/infer", _tensor(), 404),
    ("POST", f"/v2/repository/models/{LONG}/load", None, 404),
    ("POST", f"/v2/repository/models/{LONG}/unload", None, 404),
    ("POST", f"/v2/repository/models/{LONG}/traffic", {}, 404),
    ("POST", "/v2/models/wine/infer", _tensor(name=LONG), 400),
    ("POST", "/v2/models/wine/infer", _tensor(datatype=LONG), 400),
    ("POST", "/v2/models/wine/infer", {**_tensor(), "outputs": [{"name": LONG}]}, 400),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"), LONG_NAMES, ids=[f"{m[0]} {m[1][:40]}" for m in LONG_NAMES]
)
def test_a_60_kb_name_is_cut_in_the_error_that_quotes_it(
    admin: httpx.Client, method: str, path: str, body: object, status: int
) -> None:
    response = admin.request(method, path, json=body, headers=ADMIN)
    shown = response.text[:300]
    assert response.status_code == status, shown
    assert "mmmm" in response.json()["error"] and len(response.text) < 1000, shown


def _wine_tensor(shape: list[int], data: list[float]) -> dict[str, object]:
    return _tensor(shape=shape, data=data)


@pytest.mark.parametrize(
    ("shape", "data"),
    [([1] * 72, [0.0]), ([1] * 65, [0.0]), ([0, 2**62], []), ([0] + [2**20] * 4, [])],
    ids=["72 dimensions", "65 dimensions", "empty, 2**62 wide", "empty, 2**80 in all"],
)
def test_a_shape_numpy_cannot_hold_is_400_as_json_and_binary(
    client: httpx.Client, shape: list[int], data: list[float]
) -> None:
    as_json = client.post("/v2/models/wine/infer", json=_wine_tensor(shape, data))
    assert as_json.status_code == 400, as_json.text
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "guests",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4 * len(data)},
                }
            ]
        }
    ).encode()
    blob = np.asarray(data, "<f4").tobytes()
    as_binary = client.post(
        "/v2/models/wine/infer",
        content=header + blob,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert as_binary.status_code == 400, as_binary.text
    assert "input 'guests'" in as_binary.json()["error"]


def _truncate(folder: Path) -> None:
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[:300])


def _garbage(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(os.urandom(4096))


def _card_is_a_folder(folder: Path) -> None:
    (folder / "card.json").unlink()
    (folder / "card.json").mkdir()


def _external_weights(folder: Path, location: str) -> None:
    graph = onnx.load(folder / "model.onnx")
    weights = graph.graph.initializer[0]
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("raw_data")
    weights.ClearField("float_data")
    entry = weights.external_data.add()
    entry.key, entry.value = "location", location
    onnx.save(graph, folder / "model.onnx")


def _missing_external_weights(folder: Path) -> None:
    """onnxruntime's message for this quotes the weights file's full path."""
    _external_weights(folder, "weights.bin")


def _external_weights_outside(folder: Path) -> None:
    """onnxruntime's message for this quotes where the location resolves to, outside the folder."""
    _external_weights(folder, "../../../outside-2b7e/weights.bin")


BREAKAGES: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "garbage": _garbage,
    "folder-card": _card_is_a_folder,
    "external": _missing_external_weights,
    "external-outside": _external_weights_outside,
}


def _wine_copy(folder: Path, name: str) -> None:
    shutil.copytree(MODELS_DIR / "wine" / "1", folder, ignore=shutil.ignore_patterns("samples.json"))
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps(card | {"name": name}))


def test_broken_models_are_named_by_model_version_and_reason_never_by_path(
    start_server: StartServer, tmp_path: Path
) -> None:
    models = tmp_path / "repository-7d41" / "models"
    for name, breakage in BREAKAGES.items():  # each a wine version 1 under another name
        _wine_copy(models / name / "1", name)
        breakage(models / name / "1")
    elsewhere = tmp_path / "elsewhere-5c9e"  # a version folder that is a symlink to elsewhere on the disk
    _wine_copy(elsewhere, "linked")
    _truncate(elsewhere)
    (models / "linked").mkdir()
    (models / "linked" / "1").symlink_to(elsewhere)
    broken = [*BREAKAGES, "linked"]
    server = start_server(NNSERVE_MODELS_DIR=str(models), NNSERVE_ADMIN_KEYS="k", wait_ready=False)
    with server.client() as http:
        ready = http.get("/ready")
        answers = [
            ready,
            http.get("/models"),
            http.post("/v2/repository/index", headers={"Authorization": "Bearer k"}),
            *(http.post(f"/v2/models/{name}/infer", json={"inputs": []}) for name in broken),
            *(http.get(f"/v2/models/{name}/versions/1/ready") for name in broken),
        ]
    print(f"\n/ready of a repository of broken models: {ready.text}")
    assert ready.status_code == 503
    reasons = ready.json()["models"]
    assert sorted(reasons) == sorted(f"{name}/1" for name in broken)
    assert all(reason and reason != "ready" for reason in reasons.values())
    for answer in answers[3:]:
        assert answer.status_code == 503, answer.text
    for name in broken:
        assert any(f"{name} v1" in a.json()["error"] for a in answers[3:]), name
    leaks = {str(tmp_path), str(tmp_path.resolve()), "repository-7d41", "elsewhere-5c9e"}
    for answer in answers:
        assert answer.status_code != 500
        assert not [leak for leak in leaks if leak in answer.text], answer.text

"""An operator sets NNSERVE_API_KEYS and NNSERVE_ADMIN_KEYS: every prediction and inference call
needs a prediction key; probes and metrics stay open; load, unload and the repository index need
an admin key (a prediction key is a 403 there), and with no admin key configured they are refused.
The keys can come from files instead (NNSERVE_API_KEYS_FILE, NNSERVE_ADMIN_KEYS_FILE: Docker and
Kubernetes secrets are mounted as files); a key file that cannot be read stops the start."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings

from support.inprocess import MakeClient
from support.server import StartServer

KEYS = ("k-alpha-7f3a9c21", "k-beta-0b8e44d6")
ADMIN_KEYS = ("adm-gamma-51d07e9a", "adm-delta-c28b6f13")
NEAR_MISSES = [
    KEYS[0][:-1] + "2",  # one character changed
    KEYS[0][:-1],  # a prefix
    KEYS[0] + "x",  # one character more
    KEYS[0].upper(),
    KEYS[0] + KEYS[1],  # both at once
]
WINE = {"guests": ["Stiffy"]}
WINE_TENSOR = {
    "inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 0, 1] + [0] * 7}]
}
PROTECTED = [
    ("/predict/wine", WINE),
    ("/predict/spam", {"text": "hi"}),
    ("/predict/digit", {"pixels": [0.0] * 784}),
    ("/v2/models/wine/infer", WINE_TENSOR),
    ("/v2/models/wine/versions/1/infer", WINE_TENSOR),
]
ADMIN = ["/v2/repository/index", "/v2/repository/models/wine/load", "/v2/repository/models/wine/unload"]
OPEN = ["/health", "/ready", "/metrics", "/models", "/v2/health/ready", "/openapi.json"]
REFUSED = [
    None,
    "Bearer wrong-key",
    *(f"Bearer {k}" for k in NEAR_MISSES),
    f"Basic {KEYS[0]}",
    f"Token {KEYS[0]}",
    "Bearer",
    KEYS[0],
    f"Bearer{KEYS[0]}",
]


@pytest.fixture(scope="module")
def secured(make_client: MakeClient) -> httpx.Client:
    return make_client(api_keys=list(KEYS), admin_keys=list(ADMIN_KEYS))


@pytest.fixture(scope="module")
def predictions_only(make_client: MakeClient) -> httpx.Client:
    """Prediction keys set, admin keys not: the admin endpoints stay refused."""
    return make_client(api_keys=list(KEYS))


def _headers(authorization: str | None) -> dict[str, str]:
    return {"Authorization": authorization} if authorization is not None else {}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("authorization", REFUSED)
def test_predictions_and_admin_without_a_valid_key_are_401(
    secured: httpx.Client, authorization: str | None
) -> None:
    headers = _headers(authorization)
    for path, body in [*PROTECTED, *((path, None) for path in ADMIN)]:
        response = secured.post(path, json=body, headers=headers)
        assert response.status_code == 401, (path, authorization, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["code"] == "unauthorized"
        assert all(key not in response.text for key in KEYS)
    assert secured.get("/models").status_code == 200, "the admin refusals changed the repository"


@pytest.mark.parametrize("key", KEYS)
def test_each_prediction_key_is_accepted_for_predictions(secured: httpx.Client, key: str) -> None:
    for path, body in PROTECTED:
        assert secured.post(path, json=body, headers=_bearer(key)).status_code == 200, path


@pytest.mark.parametrize("key", ADMIN_KEYS)
def test_each_admin_key_is_accepted_for_admin_only(secured: httpx.Client, key: str) -> None:
    assert secured.post("/v2/repository/index", headers=_bearer(key)).status_code == 200
    assert secured.post("/v2/repository/models/wine/load", headers=_bearer(key)).status_code == 200
    for path, body in PROTECTED:  # least privilege: an admin key is not a prediction key
        assert secured.post(path, json=body, headers=_bearer(key)).status_code == 401, path


@pytest.mark.parametrize("key", KEYS)
def test_a_prediction_key_cannot_unload_a_model(secured: httpx.Client, key: str) -> None:
    for path in ADMIN:
        response = secured.post(path, headers=_bearer(key))
        assert response.status_code == 403 and response.json()["code"] == "forbidden", (path, response.text)
        assert "WWW-Authenticate" not in response.headers  # known caller: no new credentials help
    assert secured.post("/predict/wine", json=WINE, headers=_bearer(key)).status_code == 200, "unloaded"
    assert secured.get("/ready").status_code == 200


def test_without_admin_keys_a_prediction_key_cannot_administer(predictions_only: httpx.Client) -> None:
    for authorization in (None, f"Bearer {KEYS[0]}", f"Bearer {ADMIN_KEYS[0]}"):
        for path in ADMIN:
            response = predictions_only.post(path, headers=_headers(authorization))
            assert response.status_code == 403 and response.json()["code"] == "admin_disabled", path
    assert predictions_only.post("/predict/wine", json=WINE, headers=_bearer(KEYS[0])).status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_probes_and_metrics_stay_open(secured: httpx.Client, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_without_configured_keys_admin_is_refused_and_predictions_are_open(client: httpx.Client) -> None:
    """No key set: changing what a server serves is never anonymous, whatever is sent."""
    for authorization in (None, f"Bearer {KEYS[0]}", f"Bearer {ADMIN_KEYS[0]}"):
        for path in ADMIN:
            response = client.post(path, headers=_headers(authorization))
            assert response.status_code == 403 and response.json()["code"] == "admin_disabled", path
    for path, body in PROTECTED:
        assert client.post(path, json=body).status_code == 200, path


def _secured_operations(http: httpx.Client) -> set[str]:
    document = http.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    return {
        path
        for path, operations in document["paths"].items()
        if any("security" in operation for operation in operations.values())
    }


def test_the_openapi_document_says_which_operations_need_a_key(
    secured: httpx.Client, predictions_only: httpx.Client, client: httpx.Client, make_client: MakeClient
) -> None:
    """So /docs offers an Authorize button, and clients know which calls need `Authorization`."""
    admin = {
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
        "/v2/repository/models/{name}/traffic",
    }
    inference = {
        "/predict/wine",
        "/predict/spam",
        "/predict/digit",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/explain/wine",
        "/explain/spam",
        "/explain/digit",
    }
    assert _secured_operations(secured) == admin | inference
    assert _secured_operations(predictions_only) == inference  # no key can open admin: it is refused
    assert _secured_operations(make_client(admin_keys=list(ADMIN_KEYS))) == admin
    assert _secured_operations(client) == set()


def test_keys_never_reach_the_log(start_server: StartServer) -> None:
    secured = start_server(NNSERVE_API_KEYS=",".join(KEYS), NNSERVE_ADMIN_KEYS=",".join(ADMIN_KEYS))
    with secured.client() as http:
        for key in (*KEYS, *ADMIN_KEYS, *NEAR_MISSES):
            http.post("/predict/wine", json=WINE, headers={"Authorization": f"Bearer {key}"})
            http.post("/v2/repository/index", headers={"Authorization": f"Bearer {key}"})
        http.get("/health", headers={"X-Request-ID": "auth-log-marker"})
    log = secured.wait_for_log("auth-log-marker")
    assert "/predict/wine" in log and "/v2/repository/index" in log
    for key in (*KEYS, *ADMIN_KEYS, *NEAR_MISSES):
        assert key.lower() not in log.lower(), key


def test_keys_read_from_files_open_what_keys_in_the_environment_open(
    make_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One key a line or comma-separated, as `docker secret create` and `kubectl create secret
    --from-file` store them; the file's keys join those of NNSERVE_API_KEYS."""
    (tmp_path / "api").write_text(f"{KEYS[0]}\n\n  {KEYS[1]}  \n")
    (tmp_path / "admin").write_text(",".join(ADMIN_KEYS))
    monkeypatch.setenv("NNSERVE_API_KEYS_FILE", str(tmp_path / "api"))
    monkeypatch.setenv("NNSERVE_ADMIN_KEYS_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("NNSERVE_API_KEYS", "k-from-the-environment")
    http = make_client()
    for key in (*KEYS, "k-from-the-environment"):
        assert (
            http.post("/predict/wine", json=WINE, headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
    assert http.post("/predict/wine", json=WINE).status_code == 401
    for key in ADMIN_KEYS:
        assert (
            http.post("/v2/repository/index", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
    admin_with_prediction_key = http.post(
        "/v2/repository/index", headers={"Authorization": f"Bearer {KEYS[0]}"}
    )
    assert admin_with_prediction_key.status_code == 403


@pytest.mark.parametrize(
    ("variable", "content", "reason"),
    [
        ("NNSERVE_API_KEYS_FILE", None, "No such file or directory"),
        ("NNSERVE_API_KEYS_FILE", " \n,\n", "holds no key"),
        ("NNSERVE_ADMIN_KEYS_FILE", b"\xff\xfe\x00", "not a text file"),
        ("NNSERVE_ADMIN_KEYS_FILE", "directory", "Is a directory"),
    ],
)
def test_a_key_file_that_cannot_be_read_stops_the_start_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, content: str | bytes | None, reason: str
) -> None:
    """A secret mounted at the wrong path, or empty, must not leave the endpoints open: the
    error names the variable, the path and the reason, and never a key set elsewhere."""
    path = tmp_path / "keys"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.setenv(variable, str(path))
    monkeypatch.setenv("NNSERVE_API_KEYS", KEYS[0])
    monkeypatch.setenv("NNSERVE_ADMIN_KEYS", ADMIN_KEYS[0])
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(raised.value)
    assert f"{variable}: " in message and str(path) in message and reason in message, message
    assert KEYS[0] not in message and ADMIN_KEYS[0] not in message, message


def test_a_setting_refused_at_start_never_prints_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up errors go to logs that more people read than hold the keys."""
    monkeypatch.setenv("NNSERVE_API_KEYS", KEYS[0])
    monkeypatch.setenv("NNSERVE_ADMIN_KEYS", ADMIN_KEYS[0])
    monkeypatch.setenv("NNSERVE_DRAIN_SECONDS", "100")  # more than the grace: refused
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(raised.value)
    assert "NNSERVE_DRAIN_SECONDS" in message
    assert KEYS[0] not in message and ADMIN_KEYS[0] not in message, message

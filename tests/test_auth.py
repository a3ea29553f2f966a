"""An operator sets NNSERVE_API_KEYS and NNSERVE_ADMIN_KEYS: every prediction and inference call
needs a prediction key; probes and metrics stay open; load, unload and the repository index need
an admin key (a prediction key is a 403 there), and with no admin key configured they are refused."""

from __future__ import annotations

import httpx
import pytest

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

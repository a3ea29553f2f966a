"""An operator sets NNSERVE_API_KEY: predictions need a key; probes and metrics stay open."""

from __future__ import annotations

import pytest

from conftest import Server, StartServer

KEYS = ("k-alpha-7f3a9c21", "k-beta-0b8e44d6")
NEAR_MISSES = [
    KEYS[0][:-1] + "2",  # one character changed
    KEYS[0][:-1],  # a prefix
    KEYS[0] + "x",  # one character more
    KEYS[0].upper(),
]
WINE = {"guests": ["Stiffy"]}


@pytest.fixture(scope="module")
def secured(start_server: StartServer) -> Server:
    return start_server(NNSERVE_API_KEY=",".join(KEYS))


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", *(f"Bearer {k}" for k in NEAR_MISSES), f"Basic {KEYS[0]}",
     f"Token {KEYS[0]}", "Bearer", KEYS[0]],
)
def test_predictions_without_a_valid_key_are_401(secured: Server, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with secured.client() as http:
        for path, body in (("/predict/wine", WINE), ("/predict/spam", {"text": "hi"})):
            response = http.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, authorization)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize("key", KEYS)
def test_each_valid_key_is_accepted(secured: Server, key: str) -> None:
    with secured.client(headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.post("/predict/wine", json=WINE).status_code == 200
        assert http.post("/predict/digit", json={"pixels": [0.0] * 784}).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/models"])
def test_probes_and_metrics_stay_open(secured: Server, path: str) -> None:
    with secured.client() as http:
        assert http.get(path).status_code == 200


def test_keys_never_reach_the_log(secured: Server) -> None:
    with secured.client() as http:
        for key in (*KEYS, *NEAR_MISSES):
            http.post("/predict/wine", json=WINE, headers={"Authorization": f"Bearer {key}"})
        http.get("/health", headers={"X-Request-ID": "auth-log-marker"})
    log = secured.wait_for_log("auth-log-marker")
    assert "/predict/wine" in log
    for key in (*KEYS, *NEAR_MISSES):
        assert key not in log and key.lower() not in log.lower()

"""A frontend hosted elsewhere calls the API from a browser: only allowed origins may."""

from __future__ import annotations

import httpx
import pytest

from support.inprocess import MakeClient

ALLOWED = "https://frontend.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


@pytest.fixture(scope="module")
def with_cors(make_client: MakeClient) -> httpx.Client:
    return make_client(cors_origins=[ALLOWED, "https://other-allowed.example"], max_body_bytes=4096)


def test_a_preflight_from_an_allowed_origin_gets_the_headers(with_cors: httpx.Client) -> None:
    response = with_cors.options("/predict/wine", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    simple = with_cors.post("/predict/wine", json={"guests": []}, headers={"Origin": ALLOWED})
    assert simple.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_a_preflight_from_another_origin_gets_none(with_cors: httpx.Client) -> None:
    response = with_cors.options("/predict/wine", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers


def test_without_the_setting_no_cross_origin_request_is_allowed(client: httpx.Client) -> None:
    response = client.options("/predict/wine", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in response.headers
    simple = client.post("/predict/wine", json={"guests": []}, headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in simple.headers


def test_the_guards_own_errors_reach_an_allowed_origin(with_cors: httpx.Client) -> None:
    """A browser page elsewhere must be able to read a 413 (or a 503 when overloaded), not a
    CORS failure."""
    response = with_cors.post("/predict/spam", json={"text": "x" * 8192}, headers={"Origin": ALLOWED})
    assert response.status_code == 413
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED

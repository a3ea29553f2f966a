"""A frontend hosted elsewhere calls the API from a browser: only allowed origins may."""

from __future__ import annotations

import httpx
import pytest

from conftest import Server, StartServer

ALLOWED = "https://frontend.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


@pytest.fixture(scope="module")
def with_cors(start_server: StartServer) -> Server:
    return start_server(
        NNSERVE_CORS_ORIGINS=f"{ALLOWED}, https://other-allowed.example", NNSERVE_MAX_BODY_BYTES="4096"
    )


def test_a_preflight_from_an_allowed_origin_gets_the_headers(with_cors: Server) -> None:
    response = httpx.options(f"{with_cors.url}/predict/wine", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    simple = httpx.post(f"{with_cors.url}/predict/wine", json={"guests": []}, headers={"Origin": ALLOWED})
    assert simple.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_a_preflight_from_another_origin_gets_none(with_cors: Server) -> None:
    response = httpx.options(
        f"{with_cors.url}/predict/wine", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers


def test_without_the_setting_no_cross_origin_request_is_allowed(server: Server) -> None:
    response = httpx.options(f"{server.url}/predict/wine", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in response.headers
    simple = httpx.post(f"{server.url}/predict/wine", json={"guests": []}, headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in simple.headers


def test_the_guards_own_errors_reach_an_allowed_origin(with_cors: Server) -> None:
    """A browser page elsewhere must be able to read a 413 (or a 503 when overloaded), not a
    CORS failure."""
    response = httpx.post(
        f"{with_cors.url}/predict/spam", json={"text": "x" * 8192}, headers={"Origin": ALLOWED}
    )
    assert response.status_code == 413
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED

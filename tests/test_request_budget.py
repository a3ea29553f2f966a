"""A hostile client sends the most expensive images it can: the work one request causes is bounded.
Each image is charged from its header, before it is decoded, against a per-image and a
per-request pixel budget, so the worst request the limits allow costs at most
WORST_REQUEST_CPU_S of CPU, and one over them is a 413 once the budget is spent."""

from __future__ import annotations

import json

import pytest

from bench.worst_case import WORST_REQUEST_CPU_S, _images, request_cpu_seconds, worst_requests
from service.config import Settings

from support.server import Server, StartServer

SETTINGS = Settings()


@pytest.fixture(scope="module")
def served(start_server: StartServer) -> Server:
    return start_server()


@pytest.mark.parametrize("name", list(worst_requests(SETTINGS)))
def test_the_worst_requests_within_the_limits_are_served_in_bounded_cpu(served: Server, name: str) -> None:
    request = worst_requests(SETTINGS)[name]
    status, cpu = request_cpu_seconds(served.url, served.process.pid, request)
    print(f"\n{name}: {len(request[1]):,} bytes, {status}, {cpu * 1000:.0f} ms of server CPU")
    assert status == 200
    assert cpu <= WORST_REQUEST_CPU_S


def test_as_many_full_size_images_as_the_body_holds_are_refused_within_the_bound(served: Server) -> None:
    side = SETTINGS.max_image_side
    one = len(_images(1, side, side))
    count = min(SETTINGS.max_batch_size, SETTINGS.max_body_bytes // one)
    status, cpu = request_cpu_seconds(
        served.url, served.process.pid, ("/predict/digit", _images(count, side, side))
    )
    print(f"\n{count} images of {side}x{side}: {status}, {cpu * 1000:.1f} ms of server CPU")
    assert status == 413 and cpu <= WORST_REQUEST_CPU_S


@pytest.mark.parametrize(
    ("count", "width", "height", "words"),
    [
        (
            SETTINGS.max_request_pixels // SETTINGS.max_image_side**2 + 1,
            SETTINGS.max_image_side,
            SETTINGS.max_image_side,
            "limit per request",
        ),
        (1, SETTINGS.max_image_side + 1, 1, "the limit is"),
        (1, 1, SETTINGS.max_image_side + 1, "the limit is"),
    ],
)
def test_images_over_the_budget_are_413_naming_the_limit(
    served: Server, count: int, width: int, height: int, words: str
) -> None:
    with served.client() as http:
        response = http.post(
            "/predict/digit",
            content=_images(count, width, height),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413, response.text
    error = response.json()
    assert error["code"] == "payload_too_large" and words in error["error"]
    assert error["details"]["loc"].endswith(".image"), json.dumps(error)


def test_a_body_of_half_a_million_zeros_is_refused_within_the_bound(served: Server) -> None:
    """pydantic's smart unions keep an error per number for every form they try: a flat list of
    ints as `pixels` once cost 160 MB and a third of a second (service/http/schemas.py)."""
    count = (SETTINGS.max_body_bytes - 16) // 2
    body = b'{"pixels":[' + b",".join([b"0"] * count) + b"]}"
    status, cpu = request_cpu_seconds(served.url, served.process.pid, ("/predict/digit", body))
    print(f"\n{count:,} zeros as pixels: {status}, {cpu * 1000:.0f} ms of server CPU")
    assert status == 422 and cpu <= WORST_REQUEST_CPU_S / 2

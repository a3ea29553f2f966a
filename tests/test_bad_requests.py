"""Clients send broken requests: each gets a clear 4xx in the one error shape, never a 500."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from typing import Any

import httpx
import pytest
from starlette.types import Message

from service.admission.budgets import Admission
from service.config import Settings
from service.errors import Overloaded, PayloadTooLarge
from service.http.guard.body import declares_body, read_body

from support.inprocess import MakeClient
from support.server import StartServer


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG declaring width x height, all zeros: tiny on disk, huge once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str)
    return body


def test_a_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/predict/wine", content=b"guests=Dahlia", headers={"Content-Type": "application/json"}
    )
    assert _assert_error(response, 400)["code"] == "invalid_json"


def test_a_non_json_content_type_is_415(client: httpx.Client) -> None:
    response = client.post("/predict/wine", content=b"Dahlia", headers={"Content-Type": "text/plain"})
    _assert_error(response, 415)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict/wine", {"guests": "Dahlia"}),
        ("/predict/wine", {"guests": [1, 2]}),
        ("/predict/wine", {}),
        ("/predict/wine", {"guests": [], "surprise": 1}),
        ("/predict/spam", {"text": 42}),
        ("/predict/digit", {"pixels": "0.5"}),
        ("/predict/digit", {"pixels": [True] * 784}),
        ("/predict/digit", [1, 2, 3]),
    ],
)
def test_wrong_types_are_422(client: httpx.Client, path: str, body: object) -> None:
    _assert_error(client.post(path, json=body), 422)


def test_a_body_over_the_limit_is_413_before_parsing(start_server: StartServer) -> None:
    """Over real HTTP: a streamed (chunked) body is cut off as it arrives, not after."""
    server = start_server(NNSERVE_MAX_BODY_BYTES="2048")
    with server.client() as http:
        response = http.post("/predict/spam", json={"text": "x" * 4096})
        assert _assert_error(response, 413)["code"] == "payload_too_large"
        streamed = http.post(
            "/predict/spam",
            content=iter([b'{"text": "', b"x" * 4096, b'"}']),
            headers={"Content-Type": "application/json"},
        )
        _assert_error(streamed, 413)
        assert http.post("/predict/spam", json={"text": "small"}).status_code == 200


def test_a_batch_over_the_limit_is_413(make_client: MakeClient) -> None:
    http = make_client(max_batch_size=4)
    response = http.post("/predict/wine", json={"batch": [{"guests": []}] * 5})
    assert "limit of 4" in _assert_error(response, 413)["error"]
    assert http.post("/predict/wine", json={"batch": [{"guests": []}] * 4}).status_code == 200


def test_an_empty_batch_is_422(client: httpx.Client) -> None:
    _assert_error(client.post("/predict/wine", json={"batch": []}), 422)


@pytest.mark.parametrize("side", [3_000, 20_000])
def test_a_huge_png_is_refused_without_decoding(client: httpx.Client, side: int) -> None:
    bomb = _bomb_png(side, side)
    assert len(bomb) < 512 * 1024
    response = client.post("/predict/digit", json={"image": base64.b64encode(bomb).decode()})
    body = _assert_error(response, 413)
    assert "limit" in body["error"] and "pixels" in body["error"]
    assert client.get("/health").status_code == 200


def test_an_unknown_path_is_404_in_the_error_shape(client: httpx.Client) -> None:
    _assert_error(client.get("/predict/nothing"), 404)
    _assert_error(client.post("/predict/cat", json={}), 404)


def test_a_wrong_method_is_405(client: httpx.Client) -> None:
    _assert_error(client.get("/predict/wine"), 405)
    # Before any key is asked for: no key opens a call that cannot be made.
    _assert_error(client.request("TRACE", "/v2/repository/models/spam/traffic", json={"weights": {}}), 405)


def _read(body: bytes, limit: int, *, declared: bool, received: list[Message]) -> bytes:
    """The guard's read of `body` in two chunks, its length declared or not (chunked); the
    messages it took go to `received`."""
    headers = [(b"content-length", str(len(body)).encode())] if declared else []
    messages = iter(
        [
            {"type": "http.request", "body": body[:10], "more_body": True},
            {"type": "http.request", "body": body[10:], "more_body": False},
        ]
    )

    async def receive() -> Message:
        received.append(next(messages))
        return received[-1]

    admission = Admission(Settings())
    declares_body({"headers": headers}, limit)
    read, held = asyncio.run(read_body(receive, limit, admission, timeout=5))
    assert held == admission.bytes_in_flight == len(body)  # charged to the byte budget
    return read


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "chunked"])
def test_a_body_at_the_limit_is_read_and_one_byte_over_is_413(declared: bool) -> None:
    """A declared length over the limit is refused before a byte is read."""
    received: list[Message] = []
    assert _read(b"x" * 64, 64, declared=declared, received=received) == b"x" * 64
    received.clear()
    with pytest.raises(PayloadTooLarge):
        _read(b"x" * 65, 64, declared=declared, received=received)
    assert len(received) == (0 if declared else 2)


def test_the_in_flight_and_byte_budgets_admit_up_to_their_limits_exactly() -> None:
    admission = Admission(Settings(max_in_flight=2, max_bytes_in_flight=1024))
    admission.enter()
    admission.enter()
    with pytest.raises(Overloaded):
        admission.enter()
    admission.leave()
    admission.enter()  # a place given back is taken again
    held = admission.hold(0, 1000)
    assert admission.hold(0, 24) == 24  # 1024 in all: at the limit
    with pytest.raises(Overloaded):
        admission.hold(0, 1)
    admission.release(held)
    assert admission.hold(0, 1000) == 1000

"""A client sends its request body compressed (Content-Encoding gzip or deflate), as Triton's
HTTP client does when asked to, or as a proxy might: the service reads the body it means, under
the same size limit once decompressed, and says clearly what it cannot read."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

import httpx
import pytest

from service.config import Settings

EMAIL = {"text": "Congratulations! You have won a FREE cruise. Claim your prize now at http://win.example"}
PLAIN = json.dumps(EMAIL).encode()
CUT = "not one complete stream of gzip data"
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "x-gzip": gzip.compress,
}


def _post(client: httpx.Client, body: bytes, encoding: str, path: str = "/predict/spam") -> httpx.Response:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize("encoding", sorted(COMPRESS))
def test_a_compressed_body_gets_the_answer_its_plain_body_gets(client: httpx.Client, encoding: str) -> None:
    plain = client.post("/predict/spam", json=EMAIL)
    compressed = _post(client, COMPRESS[encoding](PLAIN), encoding)
    assert plain.status_code == compressed.status_code == 200, compressed.text
    assert compressed.json() == plain.json()


def test_the_encoding_is_read_as_http_writes_it(client: httpx.Client) -> None:
    """Content-Encoding is case-insensitive and may carry spaces; identity means not compressed."""
    assert _post(client, gzip.compress(PLAIN), " GZip ").status_code == 200
    assert _post(client, PLAIN, "identity").status_code == 200


def test_a_small_body_that_inflates_past_the_limit_is_refused(client: httpx.Client) -> None:
    limit = Settings().max_body_bytes
    bomb = gzip.compress(b'{"text": "' + b" " * (20 * limit) + b'"}')
    assert len(bomb) < limit // 10
    response = _post(client, bomb, "gzip")
    assert response.status_code == 413
    assert response.json()["error"] == f"request body is over the limit of {limit} bytes once decompressed"


@pytest.mark.parametrize(
    ("body", "encoding", "status", "says"),
    [
        (PLAIN, "br", 415, "Content-Encoding 'br' is not supported"),
        (PLAIN, "gzip", 400, "not valid gzip data"),
        (gzip.compress(PLAIN)[:-12], "gzip", 400, CUT),
        (gzip.compress(PLAIN) * 2, "gzip", 400, CUT),
        (PLAIN, "deflate", 400, "not valid deflate data"),
    ],
    ids=["unsupported", "not gzip", "cut short", "two streams", "not deflate"],
)
def test_a_body_that_cannot_be_decompressed_is_a_clear_4xx(
    client: httpx.Client, body: bytes, encoding: str, status: int, says: str
) -> None:
    response = _post(client, body, encoding)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]

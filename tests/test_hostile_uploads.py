"""Hostile clients open uploads and never finish them (issue 30): a body is charged to the
server's byte budget as its bytes arrive, never as declared; a request without the key its path
needs, or for a path nothing serves, is answered before its body is read; and a body that does
not arrive within NNSERVE_BODY_TIMEOUT_SECONDS is a 408. Stalled keyless connections never
starve keyed inference. `python -m bench.stalled_uploads` measures it against a default server."""

from __future__ import annotations

import time

import httpx
import pytest

from support.server import Server, StartServer
from support.stalled import WINE, answer_status, probe_wine, stalled_uploads

KEY = "k-uploads-3c81"
ADMIN_KEY = "adm-uploads-9d02"
STALLED = 16  # each declaring 1 MiB: the whole default byte budget of 16 MiB
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def secured(start_server: StartServer) -> Server:
    return start_server(
        NNSERVE_API_KEYS=KEY,
        NNSERVE_ADMIN_KEYS=ADMIN_KEY,
        NNSERVE_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S),
    )


@pytest.mark.parametrize(
    ("path", "status"),
    [("/nope", 404), ("/predict/wine", 401), ("/v2/repository/index", 401), ("/health", 405)],
)
def test_stalled_keyless_uploads_leave_keyed_inference_answered(
    secured: Server, path: str, status: int
) -> None:
    """16 connections without a key, each declaring a 1 MiB body and sending none of it: keyed
    /predict/wine is answered 200 at once, and each of them is answered without its body."""
    with stalled_uploads(secured.port, STALLED, path) as sockets:
        probe = probe_wine(secured.url, KEY, seconds=1.0)
        assert probe.first_200 is not None and probe.first_200 < 2.0, probe.answers
        assert probe.refused == 0, probe.answers
        assert [answer_status(sock, timeout=1.0) for sock in sockets] == [status] * STALLED


def test_a_keyed_body_that_stalls_is_408_and_holds_only_what_arrived(start_server: StartServer) -> None:
    """A keyed upload declaring the whole byte budget and sending ten bytes holds ten bytes: other
    requests are served beside it; its body has not arrived by the deadline, so it is a 408."""
    server = start_server(
        NNSERVE_API_KEYS=KEY,
        NNSERVE_MAX_BYTES_IN_FLIGHT=str(1 << 20),
        NNSERVE_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT_S),
    )
    keyed = f"Authorization: Bearer {KEY}\r\n"
    with stalled_uploads(server.port, 1, "/predict/wine", 1 << 20, keyed) as (sock,):
        started = time.monotonic()
        sock.sendall(b'{"guests": ')
        answered = httpx.post(
            f"{server.url}/predict/wine", json=WINE, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
        )
        assert answered.status_code == 200, answered.text
        assert answer_status(sock, timeout=BODY_TIMEOUT_S + 5) == 408
        assert time.monotonic() - started >= BODY_TIMEOUT_S
    with server.client() as http:
        assert (
            http.post("/predict/wine", json=WINE, headers={"Authorization": f"Bearer {KEY}"}).status_code
            == 200
        )

"""Hostile clients open connections and send their headers slowly, or nothing at all (slowloris):
a request's head must arrive within NNSERVE_HEADER_TIMEOUT_SECONDS, or its connection is closed
(408 if the head had begun), so such clients hold no connection, nor its file descriptor, for
longer. A client whose headers come slowly but in time is served as any other."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from support.server import Server, StartServer

HEAD_TIMEOUT_S = 2.0
PARTIAL_HEAD = b"POST /predict/wine HTTP/1.1\r\nHost: nnserve\r\nContent-Type: appl"
WINE = b'{"guests": ["Dahlia"]}'


@pytest.fixture(scope="module")
def strict(start_server: StartServer) -> Server:
    return start_server(NNSERVE_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT_S))


@contextmanager
def _connection(server: Server, sent: bytes = b"") -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEAD_TIMEOUT_S + 5) as sock:
        if sent:
            sock.sendall(sent)
        yield sock


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """All the server sends before it closes the connection, and how long that took."""
    started, received = time.monotonic(), b""
    while chunk := sock.recv(4096):
        received += chunk
    return received, time.monotonic() - started


def test_a_head_that_never_ends_is_408_and_closed(strict: Server) -> None:
    with _connection(strict, PARTIAL_HEAD) as sock:
        received, waited = _until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b'"code":"header_timeout"' in received and b"connection: close" in received
    assert HEAD_TIMEOUT_S * 0.9 <= waited <= HEAD_TIMEOUT_S + 2


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(strict: Server) -> None:
    with _connection(strict) as sock:
        received, waited = _until_closed(sock)
    assert received == b""
    assert HEAD_TIMEOUT_S * 0.9 <= waited <= HEAD_TIMEOUT_S + 2


def test_headers_that_come_slowly_but_in_time_are_served(strict: Server) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: nnserve\r\nConnection: close\r\n\r\n"
    pieces = [request[:20], request[20:40], request[40:]]
    with _connection(strict) as sock:
        for piece in pieces:
            time.sleep(HEAD_TIMEOUT_S / 8)
            sock.sendall(piece)
        received, _ = _until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200 "), received


def test_the_next_head_on_a_kept_alive_connection_has_the_same_deadline(strict: Server) -> None:
    request = b"POST /predict/wine HTTP/1.1\r\nHost: nnserve\r\nContent-Type: application/json\r\n"
    with _connection(strict, request + b"Content-Length: %d\r\n\r\n%s" % (len(WINE), WINE)) as sock:
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 "), first
        sock.sendall(PARTIAL_HEAD)
        received, waited = _until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert waited <= HEAD_TIMEOUT_S + 2


def test_a_hundred_trickling_connections_are_let_go_and_others_are_served_meanwhile(strict: Server) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(_connection(strict, PARTIAL_HEAD)) for _ in range(100)]
        assert (
            httpx.post(
                f"{strict.url}/predict/wine", content=WINE, headers={"Content-Type": "application/json"}
            ).status_code
            == 200
        )
        closed = [_until_closed(sock)[0].startswith(b"HTTP/1.1 408 ") for sock in held]
    assert all(closed)

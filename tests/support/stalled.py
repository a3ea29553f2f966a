"""Hostile clients that open uploads and never finish them (issue 30): what a stalled body may
hold of the server, and whether keyed inference still gets through beside them. Shared by
tests/test_hostile_uploads.py and bench/stalled_uploads.py, which measures it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

WINE = {"guests": ["Agatha"]}


@contextmanager
def stalled_uploads(
    port: int, count: int, path: str = "/nope", declared: int = 1 << 20, headers: str = ""
) -> Iterator[list[socket.socket]]:
    """`count` connections, each sending a POST's head declaring `declared` body bytes and then
    nothing: the body never comes. Closed on exit."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            head = (
                f"POST {path} HTTP/1.1\r\nHost: nnserve\r\nContent-Type: application/json\r\n"
                f"Content-Length: {declared}\r\n{headers}\r\n"
            )
            sock.sendall(head.encode())
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def answer_status(sock: socket.socket, timeout: float) -> int | None:
    """The status of the first answer on a connection, or None if none came within `timeout`
    seconds (or the server closed it without one)."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(64)
    except TimeoutError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if head.startswith(b"HTTP/1.1 ") and len(parts) > 1 else None


@dataclass
class Probe:
    """Keyed /predict/wine asked every `interval` seconds: each answer's status and when."""

    answers: list[tuple[float, int]]

    @property
    def first_200(self) -> float | None:
        return next((at for at, status in self.answers if status == 200), None)

    @property
    def refused(self) -> int:
        return sum(status != 200 for _, status in self.answers)


def probe_wine(url: str, key: str, seconds: float, interval: float = 0.1) -> Probe:
    """Keyed /predict/wine for `seconds`: every answer's status, and when it came, counted from
    the first request."""
    answers = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            status = http.post("/predict/wine", json=WINE).status_code
            answers.append((time.monotonic() - started, status))
            time.sleep(interval)
    return Probe(answers)

"""A response leaves the server in one write, so that a replica killed between its headers and its
body cannot leave a proxy holding half an answer it can no longer retry (service/http/wire.py; the
end-to-end case is the SIGKILL test in test_docker.py). The writes are counted on a real uvloop
socket transport, in the server process's own event loop implementation."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import uvloop

from service.http.wire import CoalescingTransport

from support.server import Server


class _CountedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport has Transport's methods


async def _writes_reaching_the_socket(steps: list[list[bytes]], *, then: str = "") -> tuple[int, bytes]:
    """Writes each step's chunks through a CoalescingTransport over a real socket pair, yielding
    to the loop between steps; returns how many writes reached the socket and what arrived."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    protocol = _CountedProtocol()
    raw, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    counted: list[bytes] = []
    write = raw.write

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(raw, name)

        def write(self, data: bytes) -> None:
            counted.append(data)
            write(data)

    transport = CoalescingTransport(Counting(), loop)  # type: ignore[arg-type]  # a transport in all but name
    for chunks in steps:
        for chunk in chunks:
            transport.write(chunk)
        if chunks is steps[-1] and then:
            getattr(transport, then)()  # in the same step as the last writes
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    theirs.setblocking(False)
    received = b""
    try:
        while chunk := theirs.recv(65536):
            received += chunk
    except BlockingIOError:
        pass
    theirs.close()
    raw.close()
    return len(counted), received


def test_headers_and_body_written_in_one_step_go_out_as_one_write() -> None:
    writes, received = uvloop.run(_writes_reaching_the_socket([[b"HTTP/1.1 200 OK\r\n\r\n", b"{}"]]))
    assert (writes, received) == (1, b"HTTP/1.1 200 OK\r\n\r\n{}")


def test_writes_in_separate_steps_each_go_out_in_order() -> None:
    # A streamed body (the docs' static files): each chunk leaves once the app yields.
    writes, received = uvloop.run(_writes_reaching_the_socket([[b"a"], [b"b", b"c"], [b"d"]]))
    assert (writes, received) == (3, b"abcd")


def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    closed = uvloop.run(_writes_reaching_the_socket([[b"last ", b"words"]], then="close"))
    assert closed == (1, b"last words")
    assert uvloop.run(_writes_reaching_the_socket([[b"never sent"]], then="abort")) == (0, b"")


def test_a_served_prediction_is_whole_with_keep_alive_and_with_connection_close(server: Server) -> None:
    for headers in ({}, {"Connection": "close"}):
        answer = httpx.post(f"{server.url}/predict/wine", json={"guests": ["Stiffy"]}, headers=headers)
        assert answer.status_code == 200 and answer.json()["buy"] >= 1
        assert int(answer.headers["content-length"]) == len(answer.content)

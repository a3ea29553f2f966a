"""One write per response, so that a replica killed mid-answer never leaves half a response behind.

uvicorn writes a response's status line and headers in one `transport.write` and its body in a
second. A proxy in front (nginx in docker-compose.yml) forwards the headers the moment they
arrive, and from then on it can no longer retry the request on another replica: a replica that
is SIGKILLed between the two writes leaves the client with headers and no body. Coalescing every
write made in one step of the event loop into a single `write` closes that window (the kernel
delivers what one write queued even after the process dies) and saves a system call per
response.

The same protocol gives a request's head (its request line and headers) a deadline, which uvicorn
does not: a connection on which no head has begun NNSERVE_HEADER_TIMEOUT_SECONDS after it opened
is closed, and one whose head has begun and not ended by then is answered 408 and closed. Without
it a client that opens connections and sends nothing, or trickles its headers a byte at a time
(slowloris), holds each connection, and its file descriptor, for as long as it likes.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport(asyncio.Transport):
    """A transport whose writes wait for the end of the current event-loop step and then go out
    as one. Everything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        """Sends what is pending, unless the connection is already going: a closed peer gets
        nothing more, as it would from the wrapped transport."""
        if self._pending and not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration with the head deadline the protocol reads from it (a Config is what
    uvicorn hands each protocol, and pickles whole to each worker process)."""

    def __init__(self, app: Any, *, head_timeout_seconds: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.head_timeout_seconds = head_timeout_seconds


def _timeout_answer(seconds: float) -> bytes:
    body = orjson.dumps(
        {"error": f"the request's headers did not arrive within {seconds:g} s", "code": "header_timeout"}
    )
    head = f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\nconnection: close\r\n\r\n" + body


class OneWriteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a CoalescingTransport, with a deadline for
    each request's head when its config is a ServerConfig."""

    _head_timer: asyncio.TimerHandle | None = None
    _in_head = False  # a head has begun and not ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods without deriving from it.
        super().connection_made(CoalescingTransport(cast(asyncio.Transport, transport), self.loop))
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._await_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_waiting()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_waiting()
        seconds = getattr(self.config, "head_timeout_seconds", None)
        if seconds is not None:
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out, seconds)

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self, seconds: float) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self.transport.write(_timeout_answer(seconds))
        self.transport.close()

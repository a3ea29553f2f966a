"""The outermost layer of every request: body size limit, request id and the access log line.

Written as plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a
stream copy per request; on small models that overhead is a measurable share of the latency.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

log = logging.getLogger("nnserve.access")

_REQUEST_ID = b"x-request-id"
_MAX_REQUEST_ID = 128


class RequestGuard:
    """Refuses a body over `max_body_bytes` with 413 before anything parses it, and gives every
    request an id (the client's X-Request-ID, or a new one), returned and logged."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_REQUEST_ID, request_id)]
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if body is None:
                response = error_response(
                    413,
                    "payload_too_large",
                    f"request body is over the limit of {self.max_body_bytes} bytes",
                )
                await response(scope, receive, send_with_id)
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": request_id.decode("latin-1"),
                },
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it is known to exceed the limit."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID and 0 < len(value) <= _MAX_REQUEST_ID and value.isascii():
            if all(32 < c < 127 for c in value):
                return value
    return uuid.uuid4().hex.encode()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the app, then defers to the real one (which
    reports the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

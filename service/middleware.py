"""The outermost layer of every request: overload shedding, the body size limit, the request id,
metrics and the access log line.

Written as plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a
stream copy per request; on small models that overhead is a measurable share of the latency.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.metrics import Metrics

log = logging.getLogger("nnserve.access")

_REQUEST_ID = b"x-request-id"
_MAX_REQUEST_ID = 128


def _is_inference(path: str) -> bool:
    """Paths that queue work on a model: the ones overload shedding applies to. Probes and
    metadata stay answerable under any load, so an orchestrator never kills a busy replica."""
    return path.startswith("/predict/") or (path.startswith("/v2/models/") and path.endswith("/infer"))


class RequestGuard:
    """Sheds inference requests past `max_in_flight` at once with 503 + Retry-After (bounded
    latency instead of an unbounded queue), refuses a body over `max_body_bytes` with 413 before
    anything parses it, and gives every request an id (the client's X-Request-ID, or a new one),
    returned, logged and counted."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_in_flight: int,
        retry_after_seconds: int,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_seconds)
        self.metrics = metrics
        self.in_flight = 0

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

        counted = _is_inference(scope["path"])
        if counted and self.in_flight >= self.max_in_flight:
            response = error_response(
                503,
                "overloaded",
                f"the server is at its limit of {self.max_in_flight} requests in flight; retry",
                headers={"Retry-After": self.retry_after},
            )
            await response(scope, receive, send_with_id)
            self._record(scope, status, started, request_id)
            return
        if counted:
            self.in_flight += 1
        self.metrics.in_flight.inc()
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
            if counted:
                self.in_flight -= 1
            self.metrics.in_flight.dec()
            self._record(scope, status, started, request_id)

    def _record(self, scope: Scope, status: int, started: float, request_id: bytes) -> None:
        seconds = time.perf_counter() - started
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.request_seconds.labels(endpoint).observe(seconds)
        log.info(
            "%s %s %d",
            scope["method"],
            scope["path"],
            status,
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
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


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def _request_id(scope: Scope) -> bytes:
    """The client's X-Request-ID if it is printable ASCII, else a new one: a random per-process
    prefix and a counter, unique without a random-number syscall per request."""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID and 0 < len(value) <= _MAX_REQUEST_ID and value.isascii():
            if all(32 < c < 127 for c in value):
                return value
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}".encode()


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

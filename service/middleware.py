"""The outermost layer of every request: the deadline, overload shedding, the body size limit,
draining, the request id, metrics and the access log line.

Written as plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a
stream copy per request; on small models that overhead is a measurable share of the latency.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import orjson
from prometheus_client import Counter, Histogram
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import deadline
from service.config import Settings
from service.drain import READINESS_PATHS, draining
from service.errors import error_response
from service.logs import log_access
from service.metrics import Metrics
from service.nnserve import NNServe

_REQUEST_ID = b"x-request-id"
_MAX_REQUEST_ID = 128
_CONNECTION_CLOSE = (b"connection", b"close")


def is_inference(path: str) -> bool:
    """Paths that queue work on a model: the ones overload shedding applies to. Probes and
    metadata stay answerable under any load, so an orchestrator never kills a busy replica."""
    return path.startswith(("/predict/", "/explain/")) or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    )


class _TooLarge(Exception):
    """The body is over NNSERVE_MAX_BODY_BYTES: 413."""


class _OverBudget(Exception):
    """Accepting the body would hold more than NNSERVE_MAX_BYTES_IN_FLIGHT at once: 503."""


class RequestGuard:
    """Gives every request its deadline (NNSERVE_INFERENCE_TIMEOUT_SECONDS, or less if the client's
    X-Request-Timeout asks), sheds inference requests past `max_in_flight` and bodies past
    `max_bytes_in_flight` at once with 503 + Retry-After (bounded latency and memory instead of an
    unbounded queue), refuses a body over `max_body_bytes` with 413 before anything parses it,
    answers readiness with 503 while the server drains, and gives every request an id (the
    client's X-Request-ID, or a new one), returned, logged and counted."""

    def __init__(self, app: ASGIApp, *, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self.max_in_flight = settings.max_in_flight
        self.max_bytes_in_flight = settings.max_bytes_in_flight
        self.deadline_seconds = settings.inference_timeout_seconds
        self.retry_after = str(settings.retry_after_seconds)
        self.metrics = metrics
        self.in_flight = 0
        self.bytes_in_flight = 0
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500
        responding = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                status = message["status"]
                responding = True
                extra = [(_REQUEST_ID, request_id), *([_CONNECTION_CLOSE] if draining.is_set() else [])]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        admitted = self._admit(scope)
        if isinstance(admitted, Response):
            await admitted(scope, receive, send_with_id)
            self._record(scope, status, started, request_id)
            return
        counted = is_inference(scope["path"])
        if counted:
            self.in_flight += 1
        self.metrics.in_flight.inc()
        held = 0  # body bytes this request holds, given back once it is answered
        deadline_token = deadline.start(admitted)
        try:
            body, held = await self._read_body(scope, receive)
            await self.app(scope, _replay(body, receive), send_with_id)
        except _TooLarge:
            response = error_response(
                413, "payload_too_large", f"request body is over the limit of {self.max_body_bytes} bytes"
            )
            await response(scope, receive, send_with_id)
        except _OverBudget:
            await self._overloaded(f"{self.max_bytes_in_flight} bytes of request bodies")(
                scope, receive, send_with_id
            )
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the shutdown grace period ends: the client
            # hears 503 (retry, on another replica) in the one error shape, not a bare 500.
            if responding:
                raise
            response = error_response(
                503,
                "shutting_down",
                "the server is shutting down; retry",
                headers={"Retry-After": self.retry_after},
            )
            await response(scope, receive, send_with_id)
        finally:
            deadline.reset(deadline_token)
            self.bytes_in_flight -= held
            if counted:
                self.in_flight -= 1
            self.metrics.in_flight.dec()
            self._record(scope, status, started, request_id)

    def _admit(self, scope: Scope) -> float | Response:
        """The seconds the request may take, or the answer it gets at once instead: readiness
        while draining, a malformed X-Request-Timeout, or the in-flight limit reached."""
        if scope["path"] in READINESS_PATHS and draining.is_set():
            return _draining_readiness(scope)
        try:
            seconds = _header_seconds(scope, self.deadline_seconds)
        except deadline.InvalidTimeout as exc:
            return error_response(400, "bad_request", str(exc))
        if is_inference(scope["path"]) and self.in_flight >= self.max_in_flight:
            return self._overloaded(f"{self.max_in_flight} requests")
        return seconds

    def _overloaded(self, limit: str) -> Response:
        return error_response(
            503,
            "overloaded",
            f"the server is at its limit of {limit} in flight; retry",
            headers={"Retry-After": self.retry_after},
        )

    def _record(self, scope: Scope, status: int, started: float, request_id: bytes) -> None:
        seconds = time.perf_counter() - started
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        count, latency = self._series(endpoint, status)
        count.inc()
        latency.observe(seconds)
        method, path = scope["method"], scope["path"]
        log_access(
            f"{method} {path} {status}",
            {
                "method": method,
                "path": path,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "request_id": request_id.decode("latin-1"),
            },
        )

    def _series(self, endpoint: str, status: int) -> tuple[Counter, Histogram]:
        """The metric children for a route template and status, looked up once: prometheus-client's
        labels() validates and hashes its arguments on every call. Both keys are bounded (route
        templates, HTTP statuses)."""
        key = (endpoint, status)
        series = self._children.get(key)
        if series is None:
            series = (
                self.metrics.requests.labels(endpoint, str(status)),
                self.metrics.request_seconds.labels(endpoint),
            )
            self._children[key] = series
        return series

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, int]:
        """The whole body and the bytes it holds of bytes_in_flight (given back at once if it is
        refused). A declared Content-Length is judged before a byte is read."""
        held = 0
        try:
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit():
                    if len(value) > 18 or int(value) > self.max_body_bytes:
                        raise _TooLarge
                    held = self._hold(held, int(value))
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge
                held = self._hold(held, size)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except BaseException:
            self.bytes_in_flight -= held
            raise
        return b"".join(chunks), held

    def _hold(self, held: int, size: int) -> int:
        """Grows what a request holds to `size` bytes, if the budget allows."""
        if size <= held:
            return held
        if self.bytes_in_flight + size - held > self.max_bytes_in_flight:
            raise _OverBudget
        self.bytes_in_flight += size - held
        return size


def _header_seconds(scope: Scope, most: float) -> float:
    for name, value in scope["headers"]:
        if name == deadline.HEADER:
            return deadline.requested_seconds(value, most)
    return most


def _draining_readiness(scope: Scope) -> Response:
    """Readiness while the server drains: 503, naming every model version and why."""
    body: dict[str, object] = {"ready": False}
    if scope["path"] == "/ready":
        app: NNServe = scope["app"]
        versions = app.dataplane.versions() if app.started else []
        body["models"] = {f"{v.name}/{v.version}": "shutting down" for v in versions}
    return Response(orjson.dumps(body), status_code=503, media_type="application/json")


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def _request_id(scope: Scope) -> bytes:
    """The client's X-Request-ID if it is printable ASCII, else a new one."""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID and printable_request_id(value):
            return bytes(value)
    return new_request_id().encode()


def printable_request_id(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and value.isascii() and all(32 < c < 127 for c in value)


def new_request_id() -> str:
    """A random per-process prefix and a counter: unique without a random-number syscall per
    request."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


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

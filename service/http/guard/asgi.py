"""RequestGuard: the outermost ASGI layer of every REST request.

Written as plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a
stream copy per request; on small models that overhead is a measurable share of the latency.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import deadline
from service.admission.budgets import Admission
from service.admission.drain import READINESS_PATHS, draining
from service.admission.keys import check_admin_key, check_key
from service.config import Settings
from service.errors import ApiError, BadRequest, ShuttingDown
from service.http.errors import error_answer
from service.http.guard.body import (
    content_encoding,
    declares_body,
    decompressed,
    read_body,
    replay,
    without_encoding,
)
from service.nnserve import NNServe
from service.observability.metrics import Metrics
from service.observability.record import RequestRecorder
from service.observability.request_id import HEADER as REQUEST_ID
from service.observability.request_id import request_id
from service.observability.tracing import RequestTrace, Tracer, activate, begin_http, deactivate, finish_http

_CONNECTION_CLOSE = (b"connection", b"close")
_ADMIN_PREFIX = "/v2/repository/"


def is_inference(path: str) -> bool:
    """Paths that queue work on a model: the ones overload shedding applies to. Probes and
    metadata stay answerable under any load, so an orchestrator never kills a busy replica."""
    return path.startswith(("/predict/", "/explain/")) or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    )


class RequestGuard:
    """Gives every request its deadline (NNSERVE_INFERENCE_TIMEOUT_SECONDS, or less if the client's
    X-Request-Timeout asks), sheds what is past the admission budgets, reads the body within its
    limits, answers readiness with 503 while the server drains, and gives every request an id,
    returned, logged and counted; with traces on, opens and ends the request's server span.

    A body is read only for a request that may use it: one without the key its path needs, or
    for a path no route serves, is answered before a byte of its body is read, so clients
    without a key cannot hold any of the byte budget that keyed requests need (issue 30)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        metrics: Metrics,
        admission: Admission,
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self.tracer = tracer  # None: traces are off, and cost one branch
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.settings = settings
        self.deadline_seconds = settings.inference_timeout_seconds
        self.retry_after = str(settings.retry_after_seconds)
        self.admission = admission  # the app's, shared with gRPC
        self.recorder = RequestRecorder(metrics, "rest")
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope["headers"])
        trace = None if self.tracer is None else begin_http(self.tracer, scope, rid.decode("latin-1"))
        trace_token = None if trace is None else activate(trace)
        status = 500
        responding = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                status = message["status"]
                responding = True
                extra = [(REQUEST_ID, rid), *([_CONNECTION_CLOSE] if draining.is_set() else [])]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        counted = is_inference(scope["path"])
        admitted = self._admit(scope, counted)
        if isinstance(admitted, Response):
            await admitted(scope, receive, send_with_id)
            self._record(scope, status, started, rid, trace)
            deactivate(trace_token)
            return
        self.metrics.in_flight.inc()
        held = 0  # body bytes this request holds, given back once it is answered
        deadline_token = deadline.start(admitted)
        try:
            body = b""
            if declares_body(scope, self.max_body_bytes) and self._wants_body(scope):
                body, held = await read_body(receive, self.max_body_bytes, self.admission, self.body_timeout)
                if (encoding := content_encoding(scope)) is not None:
                    body = decompressed(body, encoding, self.max_body_bytes)
                    held = self.admission.hold(held, len(body))
                    scope["headers"] = without_encoding(scope, len(body))
            await self.app(scope, replay(body, receive), send_with_id)
        except ApiError as refused:  # the key, the body's size, its deadline or the byte budget
            await error_answer(refused)(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when the shutdown grace period ends: the client
            # hears 503 (retry, on another replica) in the one error shape, not a bare 500.
            if responding:
                raise
            retry = {"Retry-After": self.retry_after}
            await error_answer(ShuttingDown("the server is shutting down; retry", headers=retry))(
                scope, receive, send_with_id
            )
        finally:
            deadline.reset(deadline_token)
            self.admission.release(held)
            if counted:
                self.admission.leave()
            self.metrics.in_flight.dec()
            self._record(scope, status, started, rid, trace)
            deactivate(trace_token)

    def _admit(self, scope: Scope, counted: bool) -> float | Response:
        """The seconds the request may take, or the answer it gets at once instead: readiness
        while draining, a malformed X-Request-Timeout, or the in-flight limit reached."""
        if scope["path"] in READINESS_PATHS and draining.is_set():
            return _draining_readiness(scope)
        try:
            seconds = _header_seconds(scope, self.deadline_seconds)
            if counted:
                self.admission.enter()
        except deadline.InvalidTimeout as exc:
            return error_answer(BadRequest(str(exc)))
        except ApiError as refused:
            return error_answer(refused)
        return seconds

    def _wants_body(self, scope: Scope) -> bool:
        """Whether the request's body is to be read: False for a path no route serves with this
        method, which the app answers (404, 405) without its body; else refused (raised) without
        the key its path needs. Inference paths are the hot path's, which finds its own routes."""
        path: str = scope["path"]
        if is_inference(path):
            if self.settings.api_keys:  # open inference: no header to look for on the hot path
                check_key(_authorization(scope), self.settings)
            return True
        routes = scope["app"].router.routes
        if not any(route.matches(scope)[0] is Match.FULL for route in routes):
            return False  # a 404 or 405 says more than a key refused for a call that cannot be made
        if path.startswith(_ADMIN_PREFIX):
            check_admin_key(_authorization(scope), self.settings)
        return True

    def _record(
        self, scope: Scope, status: int, started: float, rid: bytes, trace: RequestTrace | None
    ) -> None:
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        seconds = time.perf_counter() - started
        trace_id = None
        if trace is not None:
            finish_http(trace, scope, status)
            trace_id = trace.trace_id
        self.recorder.record(
            endpoint, scope["method"], scope["path"], status, seconds, rid.decode("latin-1"), trace_id
        )


def _authorization(scope: Scope) -> str:
    """The Authorization header, decoded as Starlette's `request.headers` decodes it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return ""


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

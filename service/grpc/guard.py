"""What every gRPC call meets around the servicer, as REST requests meet the request guard: the
request's deadline (the client's gRPC deadline when it asks for less than
NNSERVE_INFERENCE_TIMEOUT_SECONDS), load shedding of ModelInfer past NNSERVE_MAX_IN_FLIGHT, a
request id (the client's `x-request-id` metadata, or a new one, sent back), our errors as
statuses (service/grpc/status.py), metrics and one access line.

A grpc.aio server interceptor: the servicer stays the protocol's calls and nothing else.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from grpc import aio

from service import deadline
from service.config import Settings
from service.grpc.status import failure
from service.logs import log_access
from service.metrics import Metrics
from service.middleware import new_request_id, printable_request_id
from service.runner import QueueFull

SERVICE = "/inference.GRPCInferenceService/"
SHED = frozenset({SERVICE + "ModelInfer"})
"""Calls that queue work on a model: the ones shed under load. Probes and metadata stay
answerable under any load, as over REST."""

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


class Guard(aio.ServerInterceptor):
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.in_flight = 0
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        guarded = self._handlers.get(method)
        if guarded is not None:
            return guarded
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streams (health Watch, reflection) and unknown methods go as they are
        guarded = grpc.unary_unary_rpc_method_handler(
            # grpc's types describe the synchronous server; in grpc.aio a behaviour is a coroutine.
            self._guard(method, cast(Behavior, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = guarded
        return guarded

    def _guard(self, method: str, behavior: Behavior) -> Behavior:
        shed = method in SHED
        requests = self.metrics.requests
        latency = self.metrics.request_seconds.labels(method)

        async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            request_id = _request_id(context)
            status = "OK"
            counted = False
            token = None
            # The server span of a call (OpenTelemetry, service/tracing.py) opens here and closes
            # with `status`, around everything below.
            try:
                # In the trailers, which go out with the status anyway: initial metadata of
                # its own would be one more operation of grpc's per call.
                context.set_trailing_metadata((("x-request-id", request_id),))
                if shed:
                    if self.in_flight >= self.settings.max_in_flight:
                        raise QueueFull(
                            f"the server is at its limit of {self.settings.max_in_flight} requests in flight"
                        )
                    self.in_flight += 1
                    counted = True
                self.metrics.in_flight.inc()
                token = deadline.start(self._seconds(context))
                return await behavior(request, context)
            except asyncio.CancelledError:
                status = "CANCELLED"  # the client went away or its deadline passed
                raise
            except Exception as exc:
                if isinstance(exc, aio.AbortError):
                    raise
                answer = failure(exc, self.settings.retry_after_seconds, method)
                status = answer.code.name
                trailers = (*answer.metadata, ("x-request-id", request_id))
                await context.abort(answer.code, answer.message, trailing_metadata=trailers)
            finally:
                if token is not None:
                    deadline.reset(token)
                    self.metrics.in_flight.dec()
                if counted:
                    self.in_flight -= 1
                seconds = time.perf_counter() - started
                requests.labels(method, status).inc()
                latency.observe(seconds)
                log_access(
                    f"gRPC {method} {status}",
                    {
                        "protocol": "grpc",
                        "method": "POST",
                        "path": method,
                        "status": status,
                        "latency_ms": round(seconds * 1000, 3),
                        "request_id": request_id,
                    },
                )

        return guarded

    def _seconds(self, context: aio.ServicerContext[Any, Any]) -> float:
        """The call's deadline: the server's, or the client's if it asks for less."""
        remaining = context.time_remaining()
        most = self.settings.inference_timeout_seconds
        return most if remaining is None or math.isinf(remaining) else min(most, max(remaining, 0.0))


def _request_id(context: aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and printable_request_id(value.encode()):
            return value
    return new_request_id()

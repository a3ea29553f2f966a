"""What every gRPC call meets around the servicer, as a REST request meets the request guard and
with the same pieces (service/http/guard/): the request's deadline (the client's gRPC deadline when it
asks for less than NNSERVE_INFERENCE_TIMEOUT_SECONDS), the app's admission budgets (ModelInfer
counts against NNSERVE_MAX_IN_FLIGHT together with REST's inference, every message against
NNSERVE_MAX_BYTES_IN_FLIGHT), a request id (the client's `x-request-id` metadata, or a new one,
sent back in the trailers), our errors as statuses (service/grpc/status.py), and the metrics and
access line of service/observability/record.py with the protocol `grpc`.

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
from service.grpc.status import failure
from service.nnserve import NNServe
from service.observability import tracing
from service.observability.record import RequestRecorder
from service.observability.request_id import HEADER, request_id

SERVICE = "/inference.GRPCInferenceService/"
SHED = frozenset({SERVICE + "ModelInfer"})
"""Calls that queue work on a model: the ones counted in flight. Probes and metadata stay
answerable under any load, as over REST."""

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


class Guard(aio.ServerInterceptor):
    def __init__(self, app: NNServe) -> None:
        self.settings = app.settings
        self.metrics = app.metrics
        self.admission = app.admission
        self.recorder = RequestRecorder(app.metrics, "grpc")
        self.tracer = app.tracer
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
        counted = method in SHED

        async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = _metadata(context)
            rid = request_id((key.encode(), value.encode()) for key, value in metadata.items()).decode()
            status = grpc.StatusCode.OK
            entered = False
            held = 0
            token = None
            # The server span of the call (service/observability/tracing.py), around everything below.
            trace = None if self.tracer is None else tracing.begin_grpc(self.tracer, method, metadata, rid)
            traced = None if trace is None else tracing.activate(trace)
            try:
                # In the trailers, which go out with the status anyway: initial metadata of its
                # own would cost grpc one more operation per call.
                context.set_trailing_metadata(((HEADER.decode(), rid),))
                if counted:
                    self.admission.enter()
                    entered = True
                held = self.admission.hold(0, request.ByteSize())
                self.metrics.in_flight.inc()
                token = deadline.start(self._seconds(context))
                return await behavior(request, context)
            except asyncio.CancelledError:
                status = grpc.StatusCode.CANCELLED  # the client went away, or its deadline passed
                raise
            except Exception as exc:
                answer = failure(exc, self.admission.retry_after, method)
                status = answer.code
                tracing.note_error(answer.slug)
                trailers = (*answer.metadata, (HEADER.decode(), rid))
                await context.abort(answer.code, answer.message, trailing_metadata=trailers)
            finally:
                if token is not None:
                    deadline.reset(token)
                    self.metrics.in_flight.dec()
                self.admission.release(held)
                if entered:
                    self.admission.leave()
                trace_id = None
                if trace is not None:
                    tracing.finish_grpc(trace, method, status.name, status.value[0])
                    tracing.deactivate(traced)
                    trace_id = trace.trace_id
                seconds = time.perf_counter() - started
                self.recorder.record(method, "POST", method, status.name, seconds, rid, trace_id)

        return guarded

    def _seconds(self, context: aio.ServicerContext[Any, Any]) -> float:
        """The call's deadline: the server's, or the client's if it asks for less."""
        remaining = context.time_remaining()
        most = self.settings.inference_timeout_seconds
        return most if remaining is None or math.isinf(remaining) else min(most, max(remaining, 0.0))


def _metadata(context: aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's text metadata (binary `-bin` keys left out)."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}

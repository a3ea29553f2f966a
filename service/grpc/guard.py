"""What every gRPC call meets around the servicer, as a REST request meets the request guard and
with the same pieces (service/http/guard/): the request's deadline (the client's gRPC deadline when it
asks for less than NNSERVE_INFERENCE_TIMEOUT_SECONDS), the app's admission budgets (ModelInfer
counts against NNSERVE_MAX_IN_FLIGHT together with REST's inference, every message against
NNSERVE_MAX_BYTES_IN_FLIGHT), a request id (the client's `x-request-id` metadata, or a new one,
sent back in the trailers), our errors as statuses (service/grpc/status.py), and the metrics and
access line of service/observability/record.py with the protocol `grpc`.

A grpc.aio server interceptor: the servicer stays the protocol's calls and nothing else. It serves
each unary method as a client stream of raw bytes (the same frames on the wire), which lets it see a
call before its message arrives and read and parse that message itself: a call is refused
(UNAVAILABLE, logged) before any of its bytes are read when NNSERVE_GRPC_MAX_RECEIVING_CALLS calls
of its kind (inference, or the others: probes, metadata, the repository) are already receiving
theirs (grpc.aio shows no partial message, so twice that count times the message limit is what
partial messages can hold), the message's arrival is bounded by the call's
deadline, and a malformed or oversize message is answered, logged and counted like any other
failure instead of ending inside grpc unseen.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from service import deadline
from service.errors import BadRequest
from service.grpc.status import Failure, failure
from service.nnserve import NNServe
from service.observability import tracing
from service.observability.record import RequestRecorder
from service.observability.request_id import HEADER, request_id

SERVICE = "/inference.GRPCInferenceService/"
SHED = frozenset({SERVICE + "ModelInfer"})
"""Calls that queue work on a model: the ones counted in flight. Probes and metadata stay
answerable under any load, as over REST."""

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
Deserializer = Callable[[bytes], Any]


class Guard(aio.ServerInterceptor):
    def __init__(self, app: NNServe) -> None:
        self.settings = app.settings
        self.metrics = app.metrics
        self.admission = app.admission
        self.recorder = RequestRecorder(app.metrics, "grpc")
        self.tracer = app.tracer
        # Calls whose request message has not all arrived, inference's (True) apart from the
        # others': a flood of inference uploads never refuses a health probe.
        self.receiving = {True: 0, False: 0}
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
        guarded = grpc.stream_unary_rpc_method_handler(
            # grpc's types describe the synchronous server; in grpc.aio a behaviour is a coroutine.
            self._guard(method, cast(Behavior, handler.unary_unary), handler.request_deserializer or _same),
            response_serializer=handler.response_serializer,
        )
        self._handlers[method] = guarded
        return guarded

    def _guard(self, method: str, behavior: Behavior, parse: Deserializer) -> Behavior:
        counted = method in SHED
        # The message type's name (inference.ModelInferRequest), from its parser: FromString.
        descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        message_type = getattr(descriptor, "full_name", "request")

        async def guarded(messages: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = _metadata(context)
            rid = request_id((key.encode(), value.encode()) for key, value in metadata.items()).decode()
            status = grpc.StatusCode.OK
            entered = False
            held = 0
            token = None
            receiving = False
            # The server span of the call (service/observability/tracing.py), around everything below.
            trace = None if self.tracer is None else tracing.begin_grpc(self.tracer, method, metadata, rid)
            traced = None if trace is None else tracing.activate(trace)
            try:
                # In the trailers, which go out with the status anyway: initial metadata of its
                # own would cost grpc one more operation per call.
                context.set_trailing_metadata(((HEADER.decode(), rid),))
                if self.receiving[counted] >= self.settings.grpc_max_receiving_calls:
                    limit = self.settings.grpc_max_receiving_calls
                    raise self.admission.overloaded(f"{limit} gRPC calls receiving their message")
                self.receiving[counted] += 1
                receiving = True
                self.metrics.in_flight.inc()
                token = deadline.start(self._seconds(context))  # the message's arrival included
                raw = await _message(messages)
                self.receiving[counted] -= 1
                receiving = False
                if raw is None:
                    status = grpc.StatusCode.INVALID_ARGUMENT  # _no_message's answer, unless grpc's
                    status = await self._no_message(context, rid)
                    return None
                try:
                    request = parse(raw)
                except DecodeError:
                    raise BadRequest(f"the request is not a valid {message_type} message") from None
                if counted:
                    self.admission.enter()
                    entered = True
                held = self.admission.hold(0, len(raw))
                return await behavior(request, context)
            except asyncio.CancelledError:
                status = grpc.StatusCode.CANCELLED  # the client went away, or its deadline passed
                raise
            except aio.AbortError:
                raise  # the status is sent and `status` says which
            except Exception as exc:
                answer = failure(exc, self.admission.retry_after, method)
                status = answer.code
                await self._abort(context, answer, rid)
            finally:
                if receiving:
                    self.receiving[counted] -= 1
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

    @staticmethod
    async def _abort(context: aio.ServicerContext[Any, Any], answer: Failure, rid: str) -> None:
        tracing.note_error(answer.slug)
        trailers = (*answer.metadata, (HEADER.decode(), rid))
        await context.abort(answer.code, answer.message, trailing_metadata=trailers)

    async def _no_message(self, context: aio.ServicerContext[Any, Any], rid: str) -> grpc.StatusCode:
        """A unary call whose message never came: grpc refused it for its size (over
        NNSERVE_MAX_BODY_BYTES, grpc.max_receive_message_length) and has already sent
        RESOURCE_EXHAUSTED, which is what the call is recorded with; or the client sent none,
        which is its mistake."""
        limit = self.settings.max_body_bytes
        answer = failure(
            BadRequest(f"the call carried no request message (one over {limit} bytes is refused)"),
            self.admission.retry_after,
            "",
        )
        try:
            await self._abort(context, answer, rid)
        except aio.AbortError:
            raise  # our answer went: the client sent no message
        except Exception:  # grpc had ended the call: the message was over the limit
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        return answer.code

    def _seconds(self, context: aio.ServicerContext[Any, Any]) -> float:
        """The call's deadline: the server's, or the client's if it asks for less."""
        remaining = context.time_remaining()
        most = self.settings.inference_timeout_seconds
        return most if remaining is None or math.isinf(remaining) else min(most, max(remaining, 0.0))


async def _message(messages: AsyncIterator[bytes]) -> bytes | None:
    """The call's one request message, within the request's deadline; None if none came."""
    limit = deadline.current()
    seconds = None if limit is None else max(limit.remaining(), 0.0)
    try:
        return await asyncio.wait_for(anext(messages), seconds)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        assert limit is not None  # only a deadline times out
        raise limit.exceeded("before its message arrived") from None


def _same(raw: bytes) -> bytes:
    return raw


def _metadata(context: aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's text metadata (binary `-bin` keys left out)."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}

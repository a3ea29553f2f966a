"""OpenTelemetry traces of requests, built on nnserve's own request path, and free when off.

Off unless the standard variables ask for traces (OTEL_EXPORTER_OTLP_ENDPOINT, or
OTEL_TRACES_EXPORTER other than `none`; OTEL_SDK_DISABLED=true turns them off). Off, nothing of
the OpenTelemetry SDK is imported (FastAPI imports the API, a dependency of its own), the app's
`tracer` (NNServe.tracer) is None, the request guard branches once on it, and the notes below
find an empty context variable. On, service/observability/otel.py builds the tracer from the variables.

A request is one server span whose children are its stages: parse, preprocess, queue wait,
inference (with the batch size) and respond. The stages are not spans while the request runs:
the code that does the work notes where each one started and ended (two clock readings into a
list), and the spans are made from those notes when the request ends, so a stage costs the
request nothing unless it is sampled, and the batcher, which runs one inference for many
requests, can time each request's share without knowing about spans.

The API, the same for every protocol (REST: begin_http and finish_http below, called by the
request guard; a gRPC servicer makes the same calls with its own names and attributes):

    tracer = app.tracer                    # None: traces are off, do nothing else
    trace = tracer.begin(name, attributes, traceparent, tracestate)   # the server span starts
    token = tracing.activate(trace)        # the request's stages reach it (a context variable)
    ...  tracing.timed("parse", parse, body)    # a stage the adapter itself runs
    ...  DataPlane.model() and ModelRunner.run() note the model, the preprocessing before each
    ...  inference, the queue wait and the inference on their own; errors.error_response notes
    ...  the error code (tracing.note_error, which a gRPC error mapping calls too)
    trace.finish(name, attributes, failed)  # the server span ends; `respond` runs to here
    tracing.deactivate(token)

For gRPC, OpenTelemetry's conventions give the names: the span `inference.GRPCInferenceService/
ModelInfer`, begun with `rpc.system` "grpc", `rpc.service` and `rpc.method`, the traceparent and
tracestate from the call's metadata; finished with `rpc.grpc.status_code` (an int), failed for
UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS.

`trace.trace_id` (32 hex digits) goes into the access line (guard.record.RequestRecorder).
`begin` continues a W3C `traceparent` (and its `tracestate`) when the caller sends one; the
sampler (OTEL_TRACES_SAMPLER, default parentbased_always_on) decides, and an unsampled request
records nothing: `activate` leaves the context variable empty and `finish` returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Protocol, TypeVar

from starlette.types import Scope

AttributeValue = str | bool | int | float
Attributes = dict[str, AttributeValue]
Result = TypeVar("Result")


class TracingUnavailable(RuntimeError):
    """The variables ask for traces that cannot be sent: the packages are missing, or a variable
    names an exporter, protocol or sampler nnserve does not have. Raised at start-up."""


class RequestTrace:
    """One request's server span and the notes its stages leave; see the module docstring."""

    __slots__ = (
        "_end",
        "_last",
        "attributes",
        "failed",
        "recording",
        "span",
        "stages",
        "started",
        "started_ns",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        recording: bool,
        span: object,
        end: Callable[[RequestTrace, str, float], None],
        started: float,
        started_ns: int,
    ) -> None:
        """`started` and `started_ns`: the same moment by time.perf_counter() (which stages are
        noted in) and by the wall clock in nanoseconds (which spans carry)."""
        self.trace_id = trace_id
        self.recording = recording
        self.span = span  # the SDK's server span, opaque here
        self.stages: list[tuple[str, float, float, Attributes | None]] = []
        self.attributes: Attributes = {}
        self.failed = False
        self._last: float | None = None  # when the latest stage ended
        self._end = end
        self.started = started
        self.started_ns = started_ns

    def wall_ns(self, moment: float) -> int:
        """A time.perf_counter() reading as the wall clock's nanoseconds."""
        return self.started_ns + int((moment - self.started) * 1e9)

    def stage(self, name: str, started: float, ended: float, attributes: Attributes | None = None) -> None:
        """A child span from `started` to `ended` (time.perf_counter() readings)."""
        self.stages.append((name, started, ended, attributes))
        if self._last is None or ended > self._last:
            self._last = ended

    def since_last_stage(self, name: str, now: float) -> None:
        """A stage from the end of the previous one to `now`, if there was one: the work between
        two noted stages (preprocessing between parse and the model's queue)."""
        if self._last is not None:
            self.stage(name, self._last, now)

    def finish(self, name: str, attributes: Attributes, failed: bool) -> None:
        """Ends the server span under its final name (the route is known only once routed),
        with `respond` from the last stage to now. Unsampled: nothing to do."""
        if not self.recording:
            return
        now = time.perf_counter()
        self.since_last_stage("respond", now)
        self.attributes.update(attributes)
        self.failed = self.failed or failed
        self._end(self, name, now)


class Tracer(Protocol):
    """What service/observability/otel.py provides when traces are on."""

    def begin(
        self, name: str, attributes: Attributes, traceparent: str | None, tracestate: str | None
    ) -> RequestTrace: ...

    def flush(self) -> None:
        """Exports every ended span now (tests; shutdown)."""

    def shutdown(self) -> None:
        """Flushes and stops the export threads: at the app's shutdown."""


current_trace: ContextVar[RequestTrace | None] = ContextVar("nnserve_trace", default=None)


def activate(trace: RequestTrace) -> Token[RequestTrace | None] | None:
    """Makes `trace` the one the request's stages note into, if it is sampled."""
    return current_trace.set(trace) if trace.recording else None


def deactivate(token: Token[RequestTrace | None] | None) -> None:
    if token is not None:
        current_trace.reset(token)


def timed(stage: str, call: Callable[..., Result], *args: object) -> Result:
    """`call(*args)`, noted as a stage of the current request's trace if it is sampled."""
    trace = current_trace.get()
    if trace is None:
        return call(*args)
    started = time.perf_counter()
    try:
        return call(*args)
    finally:
        trace.stage(stage, started, time.perf_counter())


def note_error(code: str) -> None:
    """The error code (the slug of the error body, or its gRPC mapping's) of the current request."""
    trace = current_trace.get()
    if trace is not None:
        trace.attributes["error.type"] = code


def note_model(name: str, version: int) -> None:
    """The model version serving the current request."""
    trace = current_trace.get()
    if trace is not None:
        trace.attributes["nnserve.model.name"] = name
        trace.attributes["nnserve.model.version"] = version


# The REST adapter: what the request guard calls.

_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"


def begin_http(tracer: Tracer, scope: Scope, request_id: str) -> RequestTrace:
    """The server span of an HTTP request, continuing the client's W3C trace context."""
    traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == _TRACEPARENT:
            traceparent = value.decode("latin-1")
        elif name == _TRACESTATE:
            tracestate = value.decode("latin-1")
    method: str = scope["method"]
    attributes: Attributes = {
        "http.request.method": method,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "nnserve.request_id": request_id,
    }
    return tracer.begin(method, attributes, traceparent, tracestate)


def finish_http(trace: RequestTrace, scope: Scope, status: int) -> None:
    """Ends the server span, named `METHOD route` as HTTP's conventions name server spans."""
    if not trace.recording:
        return
    route = getattr(scope.get("route"), "path", None)
    attributes: Attributes = {"http.response.status_code": status}
    if route is not None:
        attributes["http.route"] = route
    name = f"{scope['method']} {route}" if route else scope["method"]
    trace.finish(name, attributes, failed=status >= 500)


# The gRPC adapter: what the gRPC guard (service/grpc/guard.py) calls.

GRPC_FAILED = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
"""The status codes that mark a server span failed, by OpenTelemetry's gRPC conventions."""


def begin_grpc(tracer: Tracer, method: str, metadata: Mapping[str, str], request_id: str) -> RequestTrace:
    """The server span of a gRPC call (`method` as grpc names it: /package.Service/Method),
    continuing the client's W3C trace context from the call's metadata."""
    service, _, rpc = method.strip("/").partition("/")
    attributes: Attributes = {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": rpc,
        "nnserve.request_id": request_id,
    }
    return tracer.begin(
        method.strip("/"), attributes, metadata.get("traceparent"), metadata.get("tracestate")
    )


def finish_grpc(trace: RequestTrace, method: str, status: str, code: int) -> None:
    """Ends the server span with the call's status (`status` its name, `code` its number)."""
    trace.finish(method.strip("/"), {"rpc.grpc.status_code": code}, status in GRPC_FAILED)

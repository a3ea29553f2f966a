"""The OpenTelemetry SDK behind service/observability/tracing.py: imported only when the OTEL_* variables ask
for traces (and only then are the packages of the [tracing] extra needed).

Built from the standard variables: OTEL_TRACES_EXPORTER (otlp, console), the OTLP exporter's own
(OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT, ...) and OTEL_EXPORTER_OTLP_PROTOCOL
(http/protobuf, or grpc when its exporter package is installed), OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, and the batch
processor's OTEL_BSP_* (queue size, batch size, delay). A name nnserve does not know is a
start-up error rather than the SDK's warning and a silent default.

The spans are built here rather than by the SDK's Tracer: the request's identity and the
sampler's decision are made when it arrives (the SDK's sampler and id generator, the W3C
propagator), and when it ends the server span and its children are made at once as finished
spans (ReadableSpan) and handed to the processors. The SDK's full span life (start_span: context
lookups, attribute cleaning, a lock; end: a lock and a copy) cost about 25 us a span here, in
a request that serves a small model in about 100; a finished span costs a few.

Spans leave through the SDK's BatchSpanProcessor: ending a span appends it to a bounded queue
that a thread exports, so a collector that is down or slow costs a request nothing; when the
queue is full the oldest span is dropped, and the processor reports each drop through its own
metric (otel.sdk.processor.span.processed with error.type), which `_DropCounter` turns into
nnserve's Prometheus counter.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import cast

from opentelemetry.metrics import Counter, NoOpCounter, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes as OtelAttributes

from service.observability.tracing import Attributes, RequestTrace, TracingUnavailable

DEFAULT_SERVICE_NAME = "nnserve"
_PROCESSED = "otel.sdk.processor.span.processed"
_SCOPE = InstrumentationScope("nnserve")
_FAILED = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class OtelTracer:
    """service.observability.tracing.Tracer on the SDK's sampler, ids, processors and exporters; spans are
    built as finished spans when the request ends (see the module docstring). No global
    provider is set, so two apps in one process keep their own exporters."""

    def __init__(
        self,
        exporters: Sequence[SpanExporter],
        on_dropped: Callable[[float], None],
        sampler: Sampler | None = None,
        resource: Resource | None = None,
    ) -> None:
        self._sampler = sampler or ParentBased(ALWAYS_ON)
        self._resource = resource or _resource()
        drops = _DropMeterProvider(on_dropped)
        with _sdk_metrics_enabled():
            self._processors = [BatchSpanProcessor(exporter, meter_provider=drops) for exporter in exporters]
        ids = RandomIdGenerator()
        self._new_trace_id = ids.generate_trace_id
        self._new_span_id = ids.generate_span_id
        self._propagator = TraceContextTextMapPropagator()
        _log_as_nnserve()

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        names: Sequence[str],
        on_dropped: Callable[[float], None],
        exporter: SpanExporter | None = None,
    ) -> OtelTracer:
        exporters = [exporter] if exporter is not None else [_exporter(name, environ) for name in names]
        return cls(exporters, on_dropped, _sampler(environ), _resource())

    def begin(
        self, name: str, attributes: Attributes, traceparent: str | None, tracestate: str | None
    ) -> RequestTrace:
        """The server span's identity and the sampler's decision, as the SDK's start_span makes
        them: the client's trace continued, else a new one."""
        context = parent = None
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            if tracestate is not None:
                carrier["tracestate"] = tracestate
            context = self._propagator.extract(carrier)
            parent = get_current_span(context).get_span_context()
            if not parent.is_valid:
                context = parent = None
        trace_id = self._new_trace_id() if parent is None else parent.trace_id
        decision = self._sampler.should_sample(context, trace_id, name, SpanKind.SERVER, attributes)
        flags = TraceFlags.SAMPLED if decision.decision is Decision.RECORD_AND_SAMPLE else TraceFlags.DEFAULT
        if parent is None or parent.trace_flags.random_trace_id:
            flags |= TraceFlags.RANDOM_TRACE_ID
        server = SpanContext(trace_id, self._new_span_id(), False, TraceFlags(flags), decision.trace_state)
        trace = RequestTrace(
            format(trace_id, "032x"),
            decision.decision is not Decision.DROP,
            (server, parent),
            self._end,
            time.perf_counter(),
            time.time_ns(),
        )
        if trace.recording:
            trace.attributes.update(decision.attributes or attributes)
        return trace

    def _end(self, trace: RequestTrace, name: str, now: float) -> None:
        """The server span and its children, finished, to the processors."""
        server, parent = cast(tuple[SpanContext, SpanContext | None], trace.span)  # as begin set it
        ns = trace.wall_ns
        spans = [
            ReadableSpan(
                name,
                server,
                parent,
                self._resource,
                trace.attributes,
                kind=SpanKind.SERVER,
                status=_FAILED if trace.failed else _UNSET,
                start_time=trace.started_ns,
                end_time=ns(now),
                instrumentation_scope=_SCOPE,
            )
        ]
        for stage, started, ended, attributes in trace.stages:
            child = SpanContext(
                server.trace_id, self._new_span_id(), False, server.trace_flags, server.trace_state
            )
            spans.append(
                ReadableSpan(
                    stage,
                    child,
                    server,
                    self._resource,
                    attributes,
                    start_time=ns(started),
                    end_time=ns(ended),
                    instrumentation_scope=_SCOPE,
                )
            )
        for processor in self._processors:
            for span in spans:
                processor.on_end(span)

    def flush(self) -> None:
        for processor in self._processors:
            processor.force_flush()

    def shutdown(self) -> None:
        for processor in self._processors:
            processor.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        # One JSON line a span, like every other line the service writes.
        return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    if name != "otlp":
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER names {name!r}: nnserve sends traces with otlp or console (or none)"
        )
    protocol = next((environ[v].strip() for v in _PROTOCOLS if environ.get(v, "").strip()), "http/protobuf")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise TracingUnavailable(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc, but the OTLP/gRPC exporter is not installed: "
                "pip install opentelemetry-exporter-otlp-proto-grpc, or use http/protobuf (the default)"
            ) from exc
        grpc_exporter: SpanExporter = GrpcSpanExporter()
        return grpc_exporter
    raise TracingUnavailable(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: nnserve sends OTLP as http/protobuf or grpc"
    )


def _sampler(environ: Mapping[str, str]) -> Sampler:
    """OTEL_TRACES_SAMPLER and its argument, as the specification names them."""
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    ratio = 1.0
    if name.endswith("traceidratio"):
        argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TracingUnavailable(f"OTEL_TRACES_SAMPLER_ARG={argument!r}: give a ratio from 0 to 1")
    samplers: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON,
        "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: ParentBased(ALWAYS_ON),
        "parentbased_always_off": lambda: ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": lambda: ParentBased(TraceIdRatioBased(ratio)),
    }
    if name not in samplers:
        raise TracingUnavailable(f"OTEL_TRACES_SAMPLER={name!r}: use one of {', '.join(samplers)}")
    return samplers[name]()


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, with `nnserve` for a service not named."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def _log_as_nnserve() -> None:
    """The SDK's warnings (an export that failed) in nnserve's log lines, JSON like the rest,
    rather than bare text from logging's last-resort handler. Drops are counted, not logged:
    with a collector down the processor would warn once per span."""
    sdk = logging.getLogger("opentelemetry")
    sdk.handlers[:] = logging.getLogger("nnserve").handlers
    sdk.setLevel(logging.WARNING)
    sdk.propagate = False
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)


@contextmanager
def _sdk_metrics_enabled() -> Iterator[None]:
    """The batch processor reports what it drops only with the SDK's own metrics on, a flag it
    reads once, when it is built; it reports them to the meter provider it is given (ours)."""
    saved = os.environ.get(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED)
    os.environ[OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED] = "true"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED]
        else:
            os.environ[OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED] = saved


class _DropCounter(NoOpCounter):
    """The processor's `processed` counter: items that carry an error.type were dropped."""

    def __init__(self, on_dropped: Callable[[float], None]) -> None:
        super().__init__(_PROCESSED)
        self._on_dropped = on_dropped

    def add(self, amount: float, attributes: OtelAttributes = None, context: object = None) -> None:
        if attributes and "error.type" in attributes:
            self._on_dropped(amount)


class _DropMeter(NoOpMeter):
    def __init__(self, on_dropped: Callable[[float], None]) -> None:
        super().__init__("nnserve.tracing")
        self._on_dropped = on_dropped

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        if name == _PROCESSED:
            return _DropCounter(self._on_dropped)
        return super().create_counter(name, unit, description)


class _DropMeterProvider(NoOpMeterProvider):
    def __init__(self, on_dropped: Callable[[float], None]) -> None:
        self._meter = _DropMeter(on_dropped)

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: OtelAttributes | None = None,
    ) -> NoOpMeter:
        return self._meter

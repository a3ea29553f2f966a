"""The OpenTelemetry SDK behind service/tracing.py: imported only when the OTEL_* variables ask
for traces (and only then are the packages of the [tracing] extra needed).

Built from the standard variables: OTEL_TRACES_EXPORTER (otlp, console), the OTLP exporter's own
(OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT, ...) and OTEL_EXPORTER_OTLP_PROTOCOL
(http/protobuf, or grpc when its exporter package is installed), OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, and the batch
processor's OTEL_BSP_* (queue size, batch size, delay). A name nnserve does not know is a
start-up error rather than the SDK's warning and a silent default.

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

from opentelemetry.metrics import Counter, NoOpCounter, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes as OtelAttributes

from service.tracing import Attributes, RequestTrace, TracingUnavailable

DEFAULT_SERVICE_NAME = "nnserve"
_PROCESSED = "otel.sdk.processor.span.processed"
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


class OtelTracer:
    """service.tracing.Tracer on the SDK: one provider of its own (never the global one, so two
    apps in one process keep their own exporters)."""

    def __init__(
        self,
        exporters: Sequence[SpanExporter],
        on_dropped: Callable[[float], None],
        sampler: Sampler | None = None,
        resource: Resource | None = None,
    ) -> None:
        self.provider = TracerProvider(sampler=sampler or ParentBased(ALWAYS_ON), resource=resource)
        drops = _DropMeterProvider(on_dropped)
        with _sdk_metrics_enabled():
            for exporter in exporters:
                self.provider.add_span_processor(BatchSpanProcessor(exporter, meter_provider=drops))
        self._tracer = self.provider.get_tracer("nnserve")
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
        parent = None
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            if tracestate is not None:
                carrier["tracestate"] = tracestate
            parent = self._propagator.extract(carrier)
        started_ns = time.time_ns()
        started = time.perf_counter()
        span = self._tracer.start_span(
            name, parent, kind=SpanKind.SERVER, attributes=attributes, start_time=started_ns
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
        return RequestTrace(trace_id, span.is_recording(), span, self._end, started, started_ns)

    def _end(self, trace: RequestTrace, name: str, now: float) -> None:
        """The server span's children from the stages' notes, then the server span itself."""
        span = trace.span
        assert isinstance(span, Span)
        span.update_name(name)
        span.set_attributes(trace.attributes)
        if trace.failed:
            span.set_status(Status(StatusCode.ERROR))
        context = set_span_in_context(span)
        ns = trace.wall_ns
        for stage, started, ended, attributes in trace.stages:
            child = self._tracer.start_span(stage, context, attributes=attributes, start_time=ns(started))
            child.end(end_time=ns(ended))
        span.end(end_time=ns(now))

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=DEFAULT_SERVICE_NAME)
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

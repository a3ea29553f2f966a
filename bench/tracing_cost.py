"""What tracing costs a request, timed in process with the service's own classes: the request
guard (which opens and ends the server span) around an app that makes the notes a wine
prediction makes (parse, the model, preprocess, queue wait, inference) and answers a constant,
with traces off, on but not sampled, and on and sampled, in interleaved rounds; each cost is the
difference of medians from the same guard without a tracer. Timed in the thread's own CPU time
(time.thread_time), since on a shared machine the wall clock mostly measures the neighbours.
Off, the cost is what the notes add when they find no trace, against calls that make none.

Spans go to an exporter that discards them: what the export thread does with them (OTLP encoding,
the HTTP post) happens off the request's path and is timed apart, per request's six spans.

    python -m bench.tracing_cost
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.stages import _asgi_us, _microseconds
from service.admission.budgets import Admission
from service.config import Settings
from service.http.guard import RequestGuard
from service.observability.metrics import Metrics
from service.observability.otel import OtelTracer
from service.observability.tracing import current_trace, note_model, timed


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _noting(scope: Scope, receive: Receive, send: Send) -> None:
    """The constant app, making the notes a prediction makes on its way (service/http/body.py,
    service/dataplane/, service/models/runner.py)."""
    message = await receive()
    timed("parse", len, message["body"])
    note_model("wine", 1)
    trace = current_trace.get()
    if trace is not None:
        now = time.perf_counter()
        trace.since_last_stage("preprocess", now)
        trace.stage("queue wait", now, now)
        trace.stage("inference", now, time.perf_counter(), {"nnserve.batch.size": 1})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _guarded_us(rounds: int, calls: int) -> dict[str, float]:
    """Median microseconds per request through the guard, the variants interleaved per round."""
    settings = Settings()
    apps: dict[str, ASGIApp] = {
        "off": RequestGuard(
            _noting, settings=settings, metrics=Metrics.create(), admission=Admission(settings)
        ),
    }
    for variant, sampler in (("not sampled", ALWAYS_OFF), ("sampled", ALWAYS_ON)):
        tracer = OtelTracer([_Discard()], lambda _: None, sampler)
        apps[variant] = RequestGuard(
            _noting, settings=settings, metrics=Metrics.create(), admission=Admission(settings), tracer=tracer
        )
    times: dict[str, list[float]] = {variant: [] for variant in apps}
    for _ in range(rounds):
        for variant, app in apps.items():
            times[variant].append(_asgi_us(app, calls, time.thread_time))
    return {variant: statistics.median(samples) for variant, samples in times.items()}


def _hooks_off_us() -> float:
    """What a request pays with traces off: the notes find no trace and step aside."""

    def bare() -> None:
        len(b"{}")

    def noted() -> None:
        timed("parse", len, b"{}")
        note_model("wine", 1)
        current_trace.get()  # the runner's look for a trace

    return max(_microseconds(noted) - _microseconds(bare), 0.0)


def _export_us_per_request() -> float:
    """The export thread's OTLP encoding of one sampled request's spans (off the request path),
    in this thread's CPU time."""
    exporter = InMemorySpanExporter()
    tracer = OtelTracer([exporter], lambda _: None, ALWAYS_ON)
    _asgi_us(
        RequestGuard(
            _noting,
            settings=Settings(),
            metrics=Metrics.create(),
            admission=Admission(Settings()),
            tracer=tracer,
        ),
        1,
    )
    tracer.flush()
    spans = exporter.get_finished_spans()
    times = []
    for _ in range(7):
        started = time.thread_time()
        for _ in range(200):
            encode_spans(spans).SerializeToString()
        times.append((time.thread_time() - started) / 200 * 1e6)
    return statistics.median(times)


def tracing_us(rounds: int = 7, calls: int = 5000) -> dict[str, float]:
    """Microseconds tracing adds to a request: off, on but not sampled, sampled; and the export
    thread's encoding of a sampled request's spans."""
    medians = _guarded_us(rounds, calls)
    return {
        "tracing off": _hooks_off_us(),
        "tracing not sampled": medians["not sampled"] - medians["off"],
        "tracing sampled": medians["sampled"] - medians["off"],
        "span export per request": _export_us_per_request(),
    }


def summary(costs: dict[str, float]) -> str:
    return (
        "Tracing, per request in process (the guard and a prediction's notes): "
        f"off {costs['tracing off']:.2f} us, on but not sampled {costs['tracing not sampled']:.1f} us, "
        f"sampled {costs['tracing sampled']:.1f} us (targets 15 and 60); the export thread encodes a "
        f"sampled request's spans in {costs['span export per request']:.0f} us, off the request's path"
    )


if __name__ == "__main__":
    print(summary(tracing_us()))

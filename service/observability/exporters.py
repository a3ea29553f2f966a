"""Start-up: whether the OTEL_* variables ask for traces, and the tracer they ask for.

Apart from tracing.py because it is the one place that imports otel.py (and with it the
OpenTelemetry SDK), and only when traces are asked for: a server without them never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from service.observability.tracing import Tracer, TracingUnavailable

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def exporter_names(environ: Mapping[str, str]) -> Sequence[str]:
    """The exporters the variables name: OTEL_TRACES_EXPORTER's list, else `otlp` when an OTLP
    endpoint is set, else none (traces off). OTEL_SDK_DISABLED=true turns them off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if listed:
        return [name.strip() for name in listed.split(",") if name.strip() not in ("", "none")]
    return ["otlp"] if any(environ.get(name, "").strip() for name in OTLP_ENDPOINTS) else []


def from_environment(
    on_dropped: Callable[[float], None],
    environ: Mapping[str, str] = os.environ,
    exporter: SpanExporter | None = None,
) -> Tracer | None:
    """The tracer the variables ask for, or None (and nothing imported) when they ask for none.
    `exporter` replaces the ones they name (the tests' in-memory exporter). `on_dropped` counts
    the spans the export queue had no room for."""
    names = exporter_names(environ)
    if not names and exporter is None:
        return None
    try:
        from service.observability import otel
    except ImportError as exc:
        raise TracingUnavailable(
            f"the OTEL_* variables ask for traces ({', '.join(names)}), but the OpenTelemetry packages "
            f"are not installed ({exc}): install nnserve with its [tracing] extra, "
            "pip install 'nnserve[tracing]'"
        ) from exc
    return otel.OtelTracer.from_environment(environ, names, on_dropped, exporter)

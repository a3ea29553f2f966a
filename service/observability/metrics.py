"""Prometheus metrics, exposed at /metrics.

Label values are bounded: requests are labelled by route template (never the raw path, which a
client controls) and models by name and version, so a scanner cannot blow up the series count.
Each app gets its own registry, so several apps in one process (tests) do not collide.

With several worker processes (NNSERVE_WORKERS > 1) each one counts in files of a directory the
console script creates and removes (service/__main__.py), in prometheus-client's
multiprocess mode, and /metrics, whichever worker answers, reports the sums over all of them.
Model status is the exception: it is the answering worker's view, read at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.config import METRICS_DIR_ENV

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_INFERENCE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
    1.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class BatchObserver:
    """What a model's runner reports of each batch, filled in by Metrics.observer; no-ops by
    default so that a runner works on its own."""

    on_batch: Callable[[int, float], None] = lambda rows, seconds: None
    on_queue_wait: Callable[[float], None] = lambda seconds: None
    # +1 as a call enters onnxruntime, -1 as it leaves: what is inside it now.
    on_running: Callable[[int], None] = lambda change: None


# Shadow and canary (service/models/traffic.py, service/models/shadow.py)
_DIFFERENCE_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


@dataclass
class TrafficMetrics:
    """Which version served each inference, and how a shadow version compares with it."""

    served: Counter
    shadow_rows: Counter
    shadow_difference: Histogram
    shadow_failures: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> TrafficMetrics:
        shadow_labels = ["model", "version", "shadow"]
        return cls(
            served=Counter(
                "nnserve_model_inferences",
                "Inferences a client asked for, by the version that answered (canary splits show here)",
                ["model", "version"],
                registry=registry,
            ),
            shadow_rows=Counter(
                "nnserve_shadow_rows",
                "Rows run by a shadow version too: outcome agree or disagree (its verdict flipped), "
                "or unlabelled for a model without classes",
                [*shadow_labels, "outcome"],
                registry=registry,
            ),
            shadow_difference=Histogram(
                "nnserve_shadow_difference",
                "Per row, the largest absolute difference between the serving and the shadow "
                "version's first output (a probability, for a classifier)",
                shadow_labels,
                buckets=_DIFFERENCE_BUCKETS,
                registry=registry,
            ),
            shadow_failures=Counter(
                "nnserve_shadow_failures",
                "Requests a shadow version could not compare: reason dropped (its queue was full), "
                "failed (its inference or preprocessing raised), or incomparable (tensors prepared "
                "for the serving version's card, which prepares inputs otherwise); clients never see these",
                [*shadow_labels, "reason"],
                registry=registry,
            ),
        )


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    in_flight: Gauge
    inference_seconds: Histogram
    batch_size: Histogram
    queue_wait_seconds: Histogram
    running: Gauge
    # Tracing (service/observability/tracing.py): what the span export queue had no room for.
    spans_dropped: Counter
    traffic: TrafficMetrics

    @classmethod
    def create(cls) -> Metrics:
        """In one process, the metrics live in this app's registry. With several workers they live
        in the shared directory's files, and the registry /metrics reads sums those files."""
        registry = CollectorRegistry()
        own: CollectorRegistry | None = registry
        if os.environ.get(METRICS_DIR_ENV):
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated
            own = None
        return cls(
            registry=registry,
            requests=Counter(
                "nnserve_requests",
                "Requests answered, by endpoint (route template or RPC), status and protocol",
                ["endpoint", "status", "protocol"],
                registry=own,
            ),
            request_seconds=Histogram(
                "nnserve_request_seconds",
                "Time from request to response",
                ["endpoint", "protocol"],
                buckets=_LATENCY_BUCKETS,
                registry=own,
            ),
            in_flight=Gauge(
                "nnserve_requests_in_flight",
                "Requests being served now",
                registry=own,
                multiprocess_mode="livesum",
            ),
            inference_seconds=Histogram(
                "nnserve_inference_seconds",
                "Time of one onnxruntime call (one batch)",
                ["model", "version"],
                buckets=_INFERENCE_BUCKETS,
                registry=own,
            ),
            batch_size=Histogram(
                "nnserve_batch_size",
                "Rows in one onnxruntime call",
                ["model", "version"],
                buckets=_BATCH_BUCKETS,
                registry=own,
            ),
            queue_wait_seconds=Histogram(
                "nnserve_queue_wait_seconds",
                "Time a request waited for the model to be free",
                ["model", "version"],
                buckets=_LATENCY_BUCKETS,
                registry=own,
            ),
            running=Gauge(
                "nnserve_inferences_running",
                "onnxruntime calls under way now (a call that started and has not finished)",
                ["model", "version"],
                registry=own,
                multiprocess_mode="livesum",
            ),
            spans_dropped=Counter(
                "nnserve_trace_spans_dropped",
                "Spans dropped because the export queue was full (the collector is down or slow)",
                registry=own,
            ),
            traffic=TrafficMetrics.create(own),
        )

    def watch_models(self, states: Callable[[], dict[tuple[str, int], bool]]) -> None:
        """Model load status, read from the repository at scrape time, so it is never stale."""
        self.registry.register(_ModelReadyCollector(states))

    def observer(self, model: str, version: int) -> BatchObserver:
        """Runner hooks with the label children bound once, off the hot path."""
        labels = (model, str(version))
        inference = self.inference_seconds.labels(*labels)
        batch = self.batch_size.labels(*labels)
        wait = self.queue_wait_seconds.labels(*labels)
        running = self.running.labels(*labels)

        def on_batch(rows: int, seconds: float) -> None:
            batch.observe(rows)
            inference.observe(seconds)

        return BatchObserver(on_batch=on_batch, on_queue_wait=wait.observe, on_running=running.inc)


class _ModelReadyCollector(Collector):
    def __init__(self, states: Callable[[], dict[tuple[str, int], bool]]) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "nnserve_model_ready",
            "1 if the model version is loaded and warmed up, else 0",
            labels=["model", "version"],
        )
        for (name, version), ready in sorted(self._states().items()):
            family.add_metric([name, str(version)], 1.0 if ready else 0.0)
        yield family

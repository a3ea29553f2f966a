"""What every answered request leaves behind, whatever its protocol: a count and a latency in
the metrics, and one access line."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from service.observability.logs import log_access
from service.observability.metrics import Metrics


class RequestRecorder:
    def __init__(self, metrics: Metrics, protocol: str) -> None:
        self.metrics = metrics
        self.protocol = protocol
        self._children: dict[tuple[str, int | str], tuple[Counter, Histogram]] = {}

    def record(
        self,
        endpoint: str,
        method: str,
        path: str,
        status: int | str,
        seconds: float,
        request_id: str,
        trace_id: str | None = None,
    ) -> None:
        """`endpoint` is a bounded label (a route template or an RPC name), `path` what the
        client asked for, which goes only to the log; `status` an HTTP status or a gRPC code;
        `trace_id` the request's trace (service/observability/tracing.py), when traces are on."""
        count, latency = self._series(endpoint, status)
        count.inc()
        latency.observe(seconds)
        fields: dict[str, object] = {
            "protocol": self.protocol,
            "method": method,
            "path": path,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "request_id": request_id,
        }
        if trace_id is not None:
            fields["trace_id"] = trace_id
        log_access(f"{method} {path} {status}", fields)

    def _series(self, endpoint: str, status: int | str) -> tuple[Counter, Histogram]:
        """The metric children for an endpoint and status, looked up once: prometheus-client's
        labels() validates and hashes its arguments on every call. Both keys are bounded."""
        key = (endpoint, status)
        series = self._children.get(key)
        if series is None:
            series = (
                self.metrics.requests.labels(endpoint, str(status), self.protocol),
                self.metrics.request_seconds.labels(endpoint, self.protocol),
            )
            self._children[key] = series
        return series

"""What a running server tells its operators: Prometheus metrics (metrics.py), the access and
error log (logs.py, record.py), request ids (request_id.py) and traces (tracing.py, with the
OpenTelemetry SDK in otel.py, loaded by exporters.py only when the OTEL_* variables ask).

Protocol-neutral: the REST guard and the gRPC guard record a request through the same pieces.
May import config, errors and the deadline only.
"""

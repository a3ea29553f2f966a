"""The request guard: what every request meets before any route, in pieces by concern.

- `shedding.Admission`: the in-flight and body-byte budgets (503 + Retry-After past them);
  protocol-neutral, so the gRPC server sheds by the same counts as REST.
- `body`: reading a REST body within NNSERVE_MAX_BODY_BYTES and the byte budget.
- `request_id`: the client's X-Request-ID or a new one.
- `record.RequestRecorder`: the metrics and the access line of one answered request, for any
  protocol.
- `asgi.RequestGuard`: the ASGI layer putting them together with the deadline and the drain.
"""

from service.guard.asgi import RequestGuard, is_inference

__all__ = ["RequestGuard", "is_inference"]

"""The request guard: what every request meets before any route, in pieces by concern.

- `body`: reading a REST body within NNSERVE_MAX_BODY_BYTES and the byte budget.
- `asgi.RequestGuard`: the ASGI layer putting together the budgets (service/admission/), the
  request id and the access record (service/observability/), the deadline and the drain.
"""

from service.http.guard.asgi import RequestGuard, is_inference

__all__ = ["RequestGuard", "is_inference"]

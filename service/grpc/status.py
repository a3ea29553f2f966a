"""Our errors as gRPC statuses: the REST error body's message as the status details and its
slug in the `error-code` trailing metadata, so a client matches on the same slug whichever
protocol it speaks. Every failure a client can cause maps to a code that says so; only a bug in
the server ends in INTERNAL.

| REST                              | gRPC               |
|-----------------------------------|--------------------|
| 400, 415, 422 (bad input)         | INVALID_ARGUMENT   |
| 401 (no or unknown key)           | UNAUTHENTICATED    |
| 403 (a key without the right)     | PERMISSION_DENIED  |
| 404 (no such model or version)    | NOT_FOUND          |
| 413 (body or batch over a limit)  | RESOURCE_EXHAUSTED |
| 503 (not ready, overloaded)       | UNAVAILABLE        |
| 504 (the request's deadline)      | DEADLINE_EXCEEDED  |
| 507 (the model ran out of memory) | RESOURCE_EXHAUSTED |

A message goes out cut to MAX_MESSAGE_CHARS: it travels in the trailers, whose size clients limit
(8 KiB by default), and one quoting a 16,000-character model name would end the call in the
client's RESOURCE_EXHAUSTED instead of the status we meant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from service.dataplane import as_api_error

log = logging.getLogger("nnserve")

CODE_KEY = "error-code"
"""The trailing metadata key holding the error's slug (`model_not_found`, `overloaded`, ...)."""

BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MAX_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    slug: str
    message: str
    metadata: tuple[tuple[str, str], ...]


def failure(exc: Exception, retry_after: str, method: str) -> Failure:
    """The status a call that raised `exc` ends with. Headers of the REST answer (Retry-After,
    WWW-Authenticate) travel as trailing metadata of the same names, lower-cased."""
    error = as_api_error(exc, retry_after)
    if error is None:
        log.error("unhandled error in %s", method, exc_info=exc)
        return Failure(grpc.StatusCode.INTERNAL, "internal_error", "internal server error", ())
    code = BY_HTTP_STATUS.get(error.status)
    if code is None:  # an ApiError status this table has not heard of: still the client's doing
        code = grpc.StatusCode.INVALID_ARGUMENT if error.status < 500 else grpc.StatusCode.INTERNAL
    headers = tuple((name.lower(), value) for name, value in error.headers.items())
    return Failure(code, error.code, _cut(error.message), ((CODE_KEY, error.code), *headers))


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[: MAX_MESSAGE_CHARS - 40]}... ({len(message):,} characters, cut)"

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
}


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
    return Failure(code, error.code, error.message, ((CODE_KEY, error.code), *headers))

"""One error shape for every failure: `{"error": message, "code": slug, "details": ...}`.

The `error` key holding a human-readable string is also what the Open Inference Protocol asks
for, so the domain endpoints and the V2 endpoints share it. No client input ever reaches a 500:
anything unexpected is logged with its traceback and answered without one.
"""

from __future__ import annotations

import re
from typing import Any


class ApiError(Exception):
    """An error with the HTTP status and slug a client sees."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


class _NamedError(ApiError):
    """An ApiError whose class fixes the status and slug, so a raise names what went wrong and
    the slug a client matches on is written once."""

    status: int
    code: str

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(type(self).status, type(self).code, message, details, headers)


class BadRequest(_NamedError):
    status, code = 400, "bad_request"


class InvalidJson(_NamedError):
    status, code = 400, "invalid_json"


class Unauthorized(_NamedError):
    status, code = 401, "unauthorized"


class Forbidden(_NamedError):
    """A prediction key on an administrative call."""

    status, code = 403, "forbidden"


class AdminDisabled(_NamedError):
    """An administrative call on a server with no admin keys: no key can open it."""

    status, code = 403, "admin_disabled"


class ModelNotFound(_NamedError):
    status, code = 404, "model_not_found"


class BodyTimeout(_NamedError):
    """The body did not arrive within NNSERVE_BODY_TIMEOUT_SECONDS: a client that stalls an
    upload must not hold the server's byte budget for as long as it likes."""

    status, code = 408, "body_timeout"


class PayloadTooLarge(_NamedError):
    status, code = 413, "payload_too_large"


class BatchTooLarge(_NamedError):
    status, code = 413, "batch_too_large"


class UnsupportedMediaType(_NamedError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(_NamedError):
    status, code = 422, "invalid_input"


class InferenceFailed(_NamedError):
    """The model cannot run on the request's inputs, or would answer more than the server sends."""

    status, code = 422, "inference_failed"


class OutputTooLarge(_NamedError):
    status, code = 422, "output_too_large"


class InsufficientMemory(_NamedError):
    """The inputs asked the model for more memory than the server has: the same request fails
    again here, a smaller one may not."""

    status, code = 507, "insufficient_memory"


class ModelNotReady(_NamedError):
    status, code = 503, "model_not_ready"


class Overloaded(_NamedError):
    """Past a budget of work in flight or queued: retry, here later or on another replica."""

    status, code = 503, "overloaded"


class ShuttingDown(_NamedError):
    status, code = 503, "shutting_down"


class TimedOut(_NamedError):
    """The request's deadline passed before its answer was ready."""

    status, code = 504, "deadline_exceeded"


# What an error message quotes of a name or version the client sent: a 60 KB model name is not
# echoed whole (issue 30); the first characters say which one it was.
MAX_QUOTED_CHARS = 64


def quoted(value: object) -> str:
    """`value` as an error message quotes it (its repr), cut to MAX_QUOTED_CHARS characters."""
    shown = repr(value)
    if len(shown) <= MAX_QUOTED_CHARS:
        return shown
    return f"{shown[:MAX_QUOTED_CHARS]}... ({len(shown)} characters)"


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"]+")


def without_paths(text: str) -> str:
    """`text` with every absolute path in it replaced by `<path>`: what a library's message
    quotes of the server's disk (a model file, its external data) never reaches a client."""
    return _ABSOLUTE_PATH.sub("<path>", text)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


# A body of 60,000 unknown keys has 60,000 errors: listing them all would answer a 650 KB
# request with 4.8 MB; the first ones say what is wrong.
MAX_ERROR_DETAILS = 20


def validation_error(errors: list[Any]) -> ApiError:
    """pydantic's error list as one ApiError: 400 for a body that is not JSON at all, else 422
    naming the first bad field (a batch item by its index) and listing the first few."""
    details = [
        {"loc": _location(tuple(e.get("loc", ()))), "msg": e.get("msg", ""), "type": e.get("type")}
        for e in errors[:MAX_ERROR_DETAILS]
    ]
    if any(d["type"] == "json_invalid" for d in details):
        return InvalidJson("the request body is not valid JSON", details)
    first = details[0] if details else {"loc": "body", "msg": "invalid"}
    return InvalidInput(f"{first['loc']}: {first['msg']}", details)

"""Errors as HTTP responses: the one JSON shape for ApiError, FastAPI's validation errors, the
runner's and the deadline's exceptions, and Starlette's own. No client input ever reaches a 500:
anything unexpected is logged with its traceback and answered without one."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.config import Settings
from service.dataplane import as_api_error
from service.deadline import DeadlineExceeded
from service.errors import ApiError, validation_error
from service.models.runner import InferenceRefused, QueueFull
from service.observability.tracing import note_error

log = logging.getLogger("nnserve")


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    note_error(code)
    body: dict[str, Any] = {"error": message, "code": code}
    if details is not None:
        body["details"] = details
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_answer(error: ApiError) -> Response:
    return error_response(error.status, error.code, error.message, error.details, error.headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return await _api_error(request, validation_error(list(exc.errors())))

    retry_after = str(settings.retry_after_seconds)

    @app.exception_handler(DeadlineExceeded)
    @app.exception_handler(QueueFull)
    @app.exception_handler(InferenceRefused)
    async def _runner(_: Request, exc: Exception) -> Response:
        error = as_api_error(exc, retry_after)
        assert error is not None  # registered for exactly these
        return error_answer(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")

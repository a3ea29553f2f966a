"""One error shape for every failure: `{"error": message, "code": slug, "details": ...}`.

The `error` key holding a human-readable string is also what the Open Inference Protocol asks
for, so the domain endpoints and the V2 endpoints share it. No client input ever reaches a 500:
anything unexpected is logged with its traceback and answered without one.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.runner import DeadlineExceeded

log = logging.getLogger("nnserve")


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


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"error": message, "code": code}
    if details is not None:
        body["details"] = details
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def validation_error(errors: list[Any]) -> ApiError:
    """pydantic's error list as one ApiError: 400 for a body that is not JSON at all, else 422
    naming the first bad field (a batch item by its index) and listing them all."""
    details = [
        {"loc": _location(tuple(e.get("loc", ()))), "msg": e.get("msg", ""), "type": e.get("type")}
        for e in errors
    ]
    if any(d["type"] == "json_invalid" for d in details):
        return ApiError(400, "invalid_json", "the request body is not valid JSON", details)
    first = details[0] if details else {"loc": "body", "msg": "invalid"}
    return ApiError(422, "invalid_input", f"{first['loc']}: {first['msg']}", details)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return await _api_error(request, validation_error(list(exc.errors())))

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(_: Request, exc: DeadlineExceeded) -> Response:
        return error_response(504, "deadline_exceeded", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")

"""Request bodies parsed straight from bytes by pydantic-core, and JSON responses by orjson.

The prediction routes take the raw request instead of letting FastAPI parse and re-validate:
pydantic's Rust JSON parser validates while it reads (no intermediate dict from the json module),
and answers are serialised once with orjson rather than validated again against a response
model. On models that run in microseconds this is most of the serving cost. The schemas still
reach /docs through `json_body`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.errors import UnsupportedMediaType, validation_error
from service.observability.tracing import timed

Model = TypeVar("Model", bound=BaseModel)
_REF = "#/components/schemas/{model}"
_BODY_SCHEMAS: dict[str, Any] = {}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON request body of a raw-request route."""
    schema = model.model_json_schema(ref_template=_REF)
    _BODY_SCHEMAS.update(schema.pop("$defs", {}))
    _BODY_SCHEMAS[model.__name__] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
        }
    }


def install_body_schemas(app: FastAPI) -> None:
    """Adds the schemas that `json_body` documented to the app's OpenAPI components, and makes
    every documented 422 the one error shape the service really sends (FastAPI documents its
    own HTTPValidationError, which errors.py replaces)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # also caches itself as app.openapi_schema
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(_BODY_SCHEMAS)
        for operation in (op for path in document["paths"].values() for op in path.values()):
            if "422" in operation.get("responses", {}):
                operation["responses"]["422"] = {
                    "description": "Invalid input",
                    "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}},
                }
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    """Read from the ASGI headers directly: a Headers object per request costs more than the
    lookup."""
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1")
    return ""


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("", "application/json") or media_type.endswith("+json")


async def parse_json(
    request: Request, model: type[Model], fast: Callable[[bytes], Model | None] | None = None
) -> Model:
    """The validated body. `fast`, if given, reads the plain bodies of a route more cheaply than
    pydantic and gives None for the rest, which pydantic then reads (and names the faults of)."""
    content_type = _content_type(request.scope["headers"])
    if not _is_json(content_type):
        raise UnsupportedMediaType(f"send JSON (Content-Type: application/json), not {content_type}")
    body = await request.body()
    parsed: Model = timed("parse", _parse, model, body, fast)
    return parsed


def _parse(model: type[Model], body: bytes, fast: Callable[[bytes], Model | None] | None) -> Model:
    """The fast reader's answer where it has one (it declines all but the plainest bodies), else
    pydantic's, whose errors name what is wrong."""
    if fast is not None and (parsed := fast(body)) is not None:
        return parsed
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_context=False)) from None


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )

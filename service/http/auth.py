"""API keys over REST: the route dependencies that check them (service/admission/keys.py holds
the rule every protocol follows), and their declaration in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from service.admission.keys import check_admin_key, check_key
from service.config import Settings
from service.http.guard import is_inference
from service.nnserve import NNServe

_SCHEME = "apiKey"


def check_api_key(request: Request) -> None:
    check_key(request.headers.get("authorization", ""), NNServe.of(request).settings)


async def require_admin_key(request: Request) -> None:
    check_admin_key(request.headers.get("authorization", ""), NNServe.of(request).settings)


def _checks_key(path: str, settings: Settings) -> bool:
    """Whether a key opens the operation at this OpenAPI path. Admin operations without admin
    keys are refused whatever is sent (403), and inference without prediction keys is open, so
    declaring a key on either would only promise what no key can give."""
    if path.startswith("/v2/repository/"):
        return bool(settings.admin_keys)
    return bool(settings.api_keys) and is_inference(path)


def document_api_keys(app: FastAPI, settings: Settings) -> None:
    """Declares the bearer key in the OpenAPI document on the operations that check it, so /docs
    offers an Authorize button (without it, "Try it out" on a secured server only gets 401s) and
    clients and fuzzers can tell which calls need `Authorization`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        components = document.setdefault("components", {})
        if "securitySchemes" not in components:  # the document is cached: declare once
            components["securitySchemes"] = {_SCHEME: {"type": "http", "scheme": "bearer"}}
            for path, operations in document["paths"].items():
                if _checks_key(path, settings):
                    for operation in operations.values():
                        operation["security"] = [{_SCHEME: []}]
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document

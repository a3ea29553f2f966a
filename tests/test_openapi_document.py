"""A client generator, a fuzzer or /docs reads /openapi.json: it must be a valid OpenAPI document,
as the openapi-spec-validator library judges it against the OpenAPI 3.1 specification."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
from openapi_spec_validator import OpenAPIV31SpecValidator

from support.inprocess import MakeClient


def _violations(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in OpenAPIV31SpecValidator(document).iter_errors()
    ]


def test_the_openapi_document_follows_the_specification(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1.")
    assert _violations(document) == []


def test_the_openapi_document_of_a_server_with_api_keys_follows_it_too(make_client: MakeClient) -> None:
    """API keys add a security scheme and per-operation requirements to the document."""
    document = make_client(api_keys=[secrets.token_hex(16)]).get("/openapi.json").json()
    assert document["components"]["securitySchemes"]
    assert _violations(document) == []

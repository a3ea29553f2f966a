"""The OpenAPI description of the V2 routes, which parse their bodies themselves (the binary
tensor data extension is not JSON): /docs and fuzzers still learn the shapes they take and give."""

from __future__ import annotations

from typing import Any

from service.http.schemas import ErrorResponse
from service.v2.codec import DATATYPES

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 503, 504)
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "data": {"type": "array", "description": "row-major values, flat or nested"},
        "parameters": {
            "type": "object",
            "description": "binary_data_size: bytes of this tensor after the JSON header",
        },
    },
}
_BINARY = {  # OpenAPI 3.1's Media Type Object has no description: it goes on the schema
    "schema": {
        "type": "string",
        "format": "binary",
        "description": "binary tensor data extension: a JSON header of Inference-Header-Content-Length "
        "bytes, then each binary tensor's raw little-endian bytes in order",
    },
}
INFER_DOCS: dict[str, Any] = {
    "parameters": [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": "length of the JSON header when binary tensors follow it",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_output": {"type": "boolean"}},
                        },
                    },
                },
                "example": {
                    "id": "1",
                    "inputs": [
                        {
                            "name": "guests",
                            "shape": [1, 10],
                            "datatype": "FP32",
                            "data": [0, 1, 1, 0, 0, 0, 0, 0, 0, 0],
                        }
                    ],
                },
            },
            "application/octet-stream": _BINARY,
        },
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs, as JSON or (if any is binary) a JSON header and their bytes",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model_name", "model_version", "outputs"],
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": _TENSOR},
                    },
                }
            },
            "application/octet-stream": _BINARY,
        },
    },
    **ERRORS,
}

"""The Open Inference Protocol (KServe V2) over the same model repository as /predict/*, so
clients written for Triton, KServe or MLServer work unchanged; plus the model repository
extension for loading and unloading models without a restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service import __version__
from service.auth import check_api_key, require_admin_key
from service.body import json_response
from service.errors import ApiError
from service.registry import ModelRepository, ModelVersion
from service.v2_codec import (
    CARD_DATATYPES,
    HEADER_LENGTH,
    encode_response,
    feeds_for,
    parse_request,
)
from service.v2_openapi import ERRORS, INFER_DOCS, INFER_RESPONSES

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])


def _registry(request: Request) -> ModelRepository:
    return request.app.state.registry


def _tensor_metadata(model: ModelVersion) -> dict[str, list[dict[str, Any]]]:
    assert model.card is not None
    return {
        kind: [
            {"name": spec.name, "datatype": CARD_DATATYPES[spec.dtype], "shape": spec.shape}
            for spec in specs
        ]
        for kind, specs in (("inputs", model.card.inputs), ("outputs", model.card.outputs))
    }


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "nnserve", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {}})
async def ready(request: Request) -> Response:
    is_ready = _registry(request).ready()
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


def _model(request: Request, name: str, version: str | None) -> ModelVersion:
    if version is not None and not (version.isascii() and version.isdigit()):
        raise ApiError(404, "model_not_found", f"model {name!r} has no version {version!r}")
    return _registry(request).get(name, int(version) if version is not None else None)


async def _metadata(request: Request, name: str, version: str | None) -> dict[str, Any]:
    model = _model(request, name, version)
    entry = _registry(request).models[name]
    return {
        "name": name,
        "versions": [str(v) for v in sorted(entry.versions)],
        "platform": "onnxruntime_onnx",
        **_tensor_metadata(model),
    }


@router.get("/models/{name}", responses=ERRORS)
async def model_metadata(request: Request, name: str) -> dict[str, Any]:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", responses=ERRORS)
async def model_version_metadata(request: Request, name: str, version: str) -> dict[str, Any]:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", responses=ERRORS)
async def model_ready(request: Request, name: str) -> dict[str, Any]:
    return {"name": name, "ready": _model(request, name, None).ready}


@router.get("/models/{name}/versions/{version}/ready", responses=ERRORS)
async def model_version_ready(request: Request, name: str, version: str) -> dict[str, Any]:
    return {"name": name, "ready": _model(request, name, version).ready}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    check_api_key(request)
    model = _model(request, name, version)
    assert model.card is not None and model.runner is not None
    parsed = parse_request(
        await request.body(), request.headers.get(HEADER_LENGTH), request.app.state.settings.max_batch_size
    )
    outputs = await model.runner.run(feeds_for(parsed, model.card.inputs))
    named = {
        spec.name: (array, CARD_DATATYPES[spec.dtype])
        for spec, array in zip(model.card.outputs, outputs, strict=True)
    }
    body, header_length = encode_response(name, model.version, parsed, named)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


@router.post("/models/{name}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_DOCS, response_class=Response)
async def infer(request: Request, name: str) -> Response:
    """Tensors in, tensors out: JSON, or the binary tensor data extension."""
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_DOCS,
    response_class=Response,
)
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


repository = APIRouter(prefix="/v2/repository", tags=["v2 model repository"], dependencies=[Depends(require_admin_key)])


@repository.post("/index", responses=ERRORS)
async def repository_index(request: Request) -> list[dict[str, Any]]:
    """Every model version and its state; a version that failed to load says why."""
    return [
        {"name": v.name, "version": str(v.version), "state": "READY" if v.ready else "UNAVAILABLE",
         "reason": v.error or ""}
        for entry in _registry(request).models.values()
        for v in entry.versions.values()
    ]


@repository.post("/models/{name}/load", responses=ERRORS)
async def load_model(request: Request, name: str) -> dict[str, Any]:
    """Loads every version in models/<name>/, new or changed, and swaps them in at once. The new
    sessions are built and warmed first, off the event loop, so serving never pauses."""
    entry = await _registry(request).load(name)
    if entry is None:
        raise ApiError(404, "model_not_found", f"no model folder with versions for {name!r}")
    return {
        "name": name,
        "versions": {str(v.version): "READY" if v.ready else f"UNAVAILABLE: {v.error}"
                     for v in entry.versions.values()},
    }


@repository.post("/models/{name}/unload", responses=ERRORS)
async def unload_model(request: Request, name: str) -> dict[str, str]:
    """Stops serving a model: its endpoints answer 404 until it is loaded again."""
    if not await _registry(request).unload(name):
        raise ApiError(404, "model_not_found", f"no model named {name!r}")
    return {"name": name, "state": "UNLOADED"}

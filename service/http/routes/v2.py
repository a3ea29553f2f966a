"""The Open Inference Protocol (KServe V2) over the same model repository as /predict/*, so
clients written for Triton, KServe or MLServer work unchanged; plus the model repository
extension for loading and unloading models without a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.config.traffic import TrafficError
from service.dataplane import documents
from service.errors import InvalidInput
from service.http.auth import check_api_key, require_admin_key
from service.http.body import json_response
from service.http.routes.common import traffic_key
from service.http.schemas import TrafficRequest
from service.http.v2_openapi import ERRORS, INFER_DOCS, INFER_RESPONSES
from service.models.loading import ServingModel
from service.models.traffic import from_request
from service.nnserve import NNServe
from service.observability.tracing import timed
from service.v2.codec import (
    CARD_DATATYPES,
    HEADER_LENGTH,
    encode_response,
    parse_request,
)

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _model(request: Request, name: str) -> ServingModel:
    """The model the path names: `/versions/{version}` pins one; without it the traffic policy
    picks, for the client's X-Traffic-Key if it sends one (service/models/traffic.py)."""
    return NNServe.of(request).dataplane.model(name, request.path_params.get("version"), traffic_key(request))


def _model_route(suffix: str, endpoint: Callable[..., Any], method: str, **options: Any) -> None:
    """Binds one handler to the unversioned and the versioned path of a model operation, as the
    protocol defines both; the handler reads the optional version from the path."""
    extra = options.pop("openapi_extra", {})
    router.add_api_route(
        f"/models/{{name}}{suffix}", endpoint, methods=[method], openapi_extra=extra, **options
    )
    versioned = {**extra, "parameters": [_VERSION, *extra.get("parameters", [])]}
    router.add_api_route(
        f"/models/{{name}}/versions/{{version}}{suffix}",
        endpoint,
        methods=[method],
        openapi_extra=versioned,
        name=f"{endpoint.__name__}_version",
        **options,
    )


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return documents.server_metadata()


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {}})
async def ready(request: Request) -> Response:
    is_ready = NNServe.of(request).dataplane.ready()
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(request: Request, name: str) -> dict[str, Any]:
    """The model's tensors, named and typed as the protocol spells them; `parameters.card` says
    whether a card describes it (`none`: a drop-in model, described by its graph alone)."""
    return documents.model_metadata(NNServe.of(request).dataplane, _model(request, name))


async def model_ready(request: Request, name: str) -> dict[str, Any]:
    """True when the model (version) serves; 404 or 503, as for inference, when it does not."""
    _model(request, name)
    return {"name": name, "ready": True}


async def infer(request: Request, name: str) -> Response:
    """Tensors in, tensors out: JSON, or the binary tensor data extension."""
    check_api_key(request)
    model = _model(request, name)
    parsed = timed(
        "parse",
        parse_request,
        await request.body(),
        request.headers.get(HEADER_LENGTH),
        NNServe.of(request).settings.max_batch_size,
    )
    outputs = await NNServe.of(request).dataplane.infer(model, documents.model_feeds(parsed, model))
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


_model_route("", model_metadata, "GET", responses=ERRORS)
_model_route("/ready", model_ready, "GET", responses=ERRORS)
_model_route(
    "/infer", infer, "POST", responses=INFER_RESPONSES, openapi_extra=INFER_DOCS, response_class=Response
)


repository = APIRouter(
    prefix="/v2/repository", tags=["v2 model repository"], dependencies=[Depends(require_admin_key)]
)


@repository.post("/index", responses=ERRORS)
async def repository_index(request: Request) -> list[dict[str, str]]:
    """Every model version and its state; a version that failed to load says why."""
    return documents.repository_index(NNServe.of(request).dataplane)


@repository.post("/models/{name}/load", responses=ERRORS)
async def load_model(request: Request, name: str) -> dict[str, Any]:
    """Loads every version in models/<name>/, new or changed, and swaps them in at once. The new
    sessions are built and warmed first, off the event loop, so serving never pauses."""
    entry = await NNServe.of(request).dataplane.load(name)
    return {
        "name": name,
        "versions": {
            str(v.version): "READY" if v.ready else f"UNAVAILABLE: {v.error}" for v in entry.versions.values()
        },
    }


@repository.post("/models/{name}/traffic", responses=ERRORS)
async def set_traffic(request: Request, name: str, body: TrafficRequest) -> dict[str, Any]:
    """Replaces the model's canary weights and shadow version (what the body leaves out is
    cleared). A policy the repository cannot follow is a 422 and the old one stays."""
    try:
        policy = from_request(name, body.weights or {}, body.shadow)
        NNServe.of(request).dataplane.set_traffic(name, policy)
    except TrafficError as exc:
        raise InvalidInput(str(exc)) from None
    return {"name": name, **policy.describe()}


@repository.post("/models/{name}/unload", responses=ERRORS)
async def unload_model(request: Request, name: str) -> dict[str, str]:
    """Stops serving a model: its endpoints answer 404 until it is loaded again."""
    await NNServe.of(request).dataplane.unload(name)
    return {"name": name, "state": "UNLOADED"}

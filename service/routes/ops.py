"""Operational endpoints: liveness, readiness and what the repository holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.card import BagOfWordsVocabulary, Preprocessing
from service.errors import ApiError
from service.registry import ModelEntry, ModelRepository, ModelVersion
from service.schemas import ErrorResponse, ModelInfo, ModelVersionInfo, ReadyResponse

router = APIRouter(tags=["operations"])


def _registry(request: Request) -> ModelRepository:
    return request.app.state.registry


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never depends on the models."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process: requests, latency, batching, queueing, model status."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request) -> ORJSONResponse:
    """Readiness: 200 only when every model version is loaded and warmed up; otherwise 503
    naming each one that is not, and why."""
    registry = _registry(request)
    failures = registry.failures()
    states = {
        f"{v.name}/{v.version}": failures.get(f"{v.name}/{v.version}", "ready")
        for entry in registry.models.values()
        for v in entry.versions.values()
    }
    is_ready = registry.ready()
    body = ReadyResponse(ready=is_ready, models=states)
    return ORJSONResponse(body.model_dump(), status_code=200 if is_ready else 503)


def _preprocessing_summary(preprocessing: Preprocessing) -> dict[str, Any]:
    """The card's preprocessing for clients: a vocabulary is summarised by its size, since
    thousands of words help nobody reading /models."""
    if isinstance(preprocessing, BagOfWordsVocabulary):
        return {"kind": preprocessing.kind, "vocabulary_size": len(preprocessing.vocabulary)}
    return preprocessing.model_dump()


def _version_info(model: ModelVersion) -> ModelVersionInfo:
    card = model.card
    if card is None:
        return ModelVersionInfo(version=model.version, ready=False, error=model.error)
    return ModelVersionInfo(
        version=model.version,
        ready=model.ready,
        error=model.error,
        task=card.task,
        inputs=[spec.model_dump() for spec in card.inputs],
        outputs=[spec.model_dump() for spec in card.outputs],
        labels=card.labels,
        preprocessing=_preprocessing_summary(card.preprocessing),
        metrics=card.metrics,
        baseline=card.baseline,
    )


def _model_info(entry: ModelEntry) -> ModelInfo:
    latest = entry.latest_ready()
    return ModelInfo(
        name=entry.name,
        latest_ready_version=latest.version if latest else None,
        versions=[_version_info(v) for _, v in sorted(entry.versions.items())],
    )


@router.get("/models", response_model=list[ModelInfo])
async def list_models(request: Request) -> list[ModelInfo]:
    """Every model and version in the repository, with its card's tensors and metrics."""
    return [_model_info(entry) for entry in _registry(request).models.values()]


@router.get("/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
async def get_model(name: str, request: Request) -> ModelInfo:
    entry = _registry(request).models.get(name)
    if entry is None:
        raise ApiError(404, "model_not_found", f"no model named {name!r}")
    return _model_info(entry)


bench_router = APIRouter(tags=["bench"], include_in_schema=False)
_CONSTANT = b'{"status":"ok","model":{"name":"constant","version":1}}'


@bench_router.get("/bench/constant")
async def constant() -> Response:
    """The bare ceiling for `make bench`: the same server stack, no model, no parsing."""
    return Response(_CONSTANT, media_type="application/json")

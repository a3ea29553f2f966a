"""Operational endpoints: liveness, readiness and what the repository holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.card import BagOfWordsVocabulary, GraphCard, Preprocessing, TokenIdVocabulary
from service.dataplane import DataPlane, card_kind
from service.http.body import json_response
from service.http.schemas import ErrorResponse, ModelInfo, ModelVersionInfo, ReadyResponse, TrafficInfo
from service.models.loading import ModelVersion
from service.models.repository import ModelEntry
from service.nnserve import NNServe

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never depends on the models."""
    return {"status": "ok"}


@router.get("/metrics", response_class=PlainTextResponse)  # documents the text/plain answer
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process: requests, latency, batching, queueing, model status."""
    return Response(generate_latest(NNServe.of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request) -> Response:
    """Readiness: 200 only when every model version is loaded and warmed up (with
    NNSERVE_STRICT_READINESS=false: when at least one is); otherwise 503. Each version that is
    not ready is named, with why."""
    dataplane = NNServe.of(request).dataplane
    states = {
        f"{v.name}/{v.version}": "ready" if v.ready else v.error or "not loaded" for v in dataplane.versions()
    }
    is_ready = dataplane.ready()
    return json_response({"ready": is_ready, "models": states}, 200 if is_ready else 503)


def _preprocessing_summary(preprocessing: Preprocessing) -> dict[str, Any]:
    """The card's preprocessing for clients: a vocabulary is summarised by its size, since
    thousands of words help nobody reading /models."""
    if isinstance(preprocessing, BagOfWordsVocabulary | TokenIdVocabulary):
        return {"kind": preprocessing.kind, "vocabulary_size": len(preprocessing.vocabulary)}
    return preprocessing.model_dump()


def _version_info(model: ModelVersion) -> ModelVersionInfo:
    card = model.card
    if card is None:
        return ModelVersionInfo(version=model.version, ready=False, error=model.error)
    described = ModelVersionInfo(
        version=model.version,
        ready=model.ready,
        error=model.error,
        inputs=[spec.model_dump() for spec in card.inputs],
        outputs=[spec.model_dump() for spec in card.outputs],
        labels=card.labels,
        card=card_kind(card),
    )
    if isinstance(card, GraphCard):
        return described.model_copy(update={"description": card.description, "example": card.example})
    return described.model_copy(
        update={
            "task": card.task,
            "preprocessing": _preprocessing_summary(card.preprocessing),
            "metrics": card.metrics,
            "baseline": card.baseline,
        }
    )


def _model_info(dataplane: DataPlane, entry: ModelEntry) -> ModelInfo:
    default = dataplane.default_version(entry)
    policy = dataplane.traffic.get(entry.name)
    return ModelInfo(
        name=entry.name,
        latest_ready_version=default.version if default else None,
        traffic=TrafficInfo(**policy.describe()) if policy else None,
        versions=[_version_info(v) for _, v in sorted(entry.versions.items())],
    )


@router.get("/models")
async def list_models(request: Request) -> list[ModelInfo]:
    """Every model and version in the repository, with its card's tensors and metrics."""
    dataplane = NNServe.of(request).dataplane
    return [_model_info(dataplane, entry) for entry in dataplane.repository.models.values()]


@router.get("/models/{name}", responses={404: {"model": ErrorResponse}})
async def get_model(name: str, request: Request) -> ModelInfo:
    dataplane = NNServe.of(request).dataplane
    return _model_info(dataplane, dataplane.entry(name))

"""Operational endpoints: liveness, readiness and what the repository holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.body import json_response
from service.card import BagOfWordsVocabulary, Preprocessing, TokenIdVocabulary
from service.loading import ModelVersion
from service.nnserve import NNServe
from service.repository import ModelEntry
from service.schemas import ErrorResponse, ModelInfo, ModelVersionInfo, ReadyResponse

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
    """Readiness: 200 only when every model version is loaded and warmed up; otherwise 503
    naming each one that is not, and why."""
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


@router.get("/models")
async def list_models(request: Request) -> list[ModelInfo]:
    """Every model and version in the repository, with its card's tensors and metrics."""
    return [_model_info(entry) for entry in NNServe.of(request).dataplane.repository.models.values()]


@router.get("/models/{name}", responses={404: {"model": ErrorResponse}})
async def get_model(name: str, request: Request) -> ModelInfo:
    return _model_info(NNServe.of(request).dataplane.entry(name))

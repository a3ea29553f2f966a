"""The domain endpoints: /predict/wine, /predict/spam, /predict/digit.

Each reads top-down: validated body -> shared preprocessing per item -> the model's runner ->
response. A `version` query parameter pins a model version; without it the highest ready
version answers. The routes take the raw request (see service/body.py for why).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.auth import check_api_key
from service.body import json_body, json_response, parse_json
from service.config import Settings
from service.errors import ApiError
from service.features import (
    BagOfWords,
    FeatureError,
    GuestEncoder,
    ImageTooLargeError,
    UnknownGuestError,
    decode_base64_image,
    image_bytes_to_digit,
    pixels_to_digit,
)
from service.registry import ModelRepository, ModelVersion
from service.schemas import (
    DigitBatchResponse,
    DigitItem,
    DigitRequest,
    DigitResponse,
    ErrorResponse,
    SpamBatchResponse,
    SpamRequest,
    SpamResponse,
    WineBatchResponse,
    WineRequest,
    WineResponse,
)

router = APIRouter(prefix="/predict", tags=["predict"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503, 504)
}
Item = TypeVar("Item")
Body = TypeVar("Body", bound=BaseModel)
_VERSION_PARAMETER = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "model version; default: the highest ready one",
    "schema": {"type": "integer", "minimum": 1},
}


def _documented(request_model: type, *response_models: type) -> dict[str, Any]:
    """Route options that document a raw-request route: its JSON body, its `version` query
    parameter (read by _model, which costs less than FastAPI's dependency machinery) and its
    answers."""
    return {
        "openapi_extra": json_body(request_model) | {"parameters": [_VERSION_PARAMETER]},
        "responses": {200: {"model": response_models[0] | response_models[1]}, **_ERRORS},
        "response_class": Response,
    }


def _model(request: Request, name: str, encoder: type | None) -> ModelVersion:
    """The model version the request asks for (`?version=N`) or the highest ready one."""
    registry: ModelRepository = request.app.state.registry
    asked = request.query_params.get("version")
    if asked is not None and not (asked.isascii() and asked.isdigit() and int(asked) >= 1):
        raise ApiError(422, "invalid_input", f"query.version: {asked!r} is not a version number")
    model = registry.get(name, int(asked) if asked is not None else None)
    if encoder is not None and not isinstance(model.encoder, encoder):
        raise ApiError(503, "model_not_ready", f"model {name!r} does not take {encoder.__name__}")
    return model


def _check_batch(settings: Settings, items: Sequence[Any]) -> None:
    if len(items) > settings.max_batch_size:
        raise ApiError(
            413,
            "batch_too_large",
            f"batch of {len(items)} items is over the limit of {settings.max_batch_size}",
        )
    if not items:
        raise ApiError(422, "invalid_input", "batch: give at least one item")


def _feature_error(exc: FeatureError, where: str) -> ApiError:
    status = 413 if isinstance(exc, ImageTooLargeError) else 422
    details: dict[str, Any] = {"loc": where}
    if isinstance(exc, UnknownGuestError):
        details |= {"unknown": exc.unknown, "known_guests": exc.roster}
    code = "payload_too_large" if status == 413 else "invalid_input"
    return ApiError(status, code, f"{where}: {exc}", details)


def _encode_each(
    items: Sequence[Item],
    batched: bool,
    field_of: Callable[[Item], str],
    encode: Callable[[Item], np.ndarray],
) -> np.ndarray:
    """Encodes every item; the first one that fails is reported by its index in the batch."""
    rows = []
    for index, item in enumerate(items):
        try:
            rows.append(encode(item))
        except FeatureError as exc:
            where = f"batch.{index}.{field_of(item)}" if batched else field_of(item)
            raise _feature_error(exc, where) from exc
    return np.stack(rows)


async def _run(model: ModelVersion, rows: np.ndarray) -> np.ndarray:
    """The model's first output (the card's) for these rows."""
    assert model.card is not None and model.runner is not None
    return (await model.runner.run({model.card.inputs[0].name: rows}))[0]


def _answer(model: ModelVersion, predictions: list[dict[str, Any]], batched: bool) -> Response:
    ref = {"name": model.name, "version": model.version}
    if batched:
        return json_response({"predictions": predictions, "model": ref})
    return json_response({**predictions[0], "model": ref})


async def _begin(request: Request, body_model: type[Body], name: str, encoder: type | None
                 ) -> tuple[Body, ModelVersion]:
    """What every prediction does first: check the key, validate the body, find the model."""
    check_api_key(request)
    body = await parse_json(request, body_model)
    return body, _model(request, name, encoder)


@router.post("/wine", **_documented(WineRequest, WineResponse, WineBatchResponse))
async def predict_wine(request: Request) -> Response:
    """Bottles of wine for a dinner party: the guest list in, bottles out (you included)."""
    body, model = await _begin(request, WineRequest, "wine", GuestEncoder)
    encoder: GuestEncoder = model.encoder  # type: ignore[assignment]
    guest_lists = body.items()
    _check_batch(request.app.state.settings, guest_lists)
    rows = _encode_each(guest_lists, body.batched, lambda _: "guests", encoder.encode)
    bottles = [round(b, 4) for b in (await _run(model, rows))[:, 0].tolist()]
    predictions = [{"bottles": b, "buy": math.ceil(b)} for b in bottles]
    return _answer(model, predictions, body.batched)


@router.post("/spam", **_documented(SpamRequest, SpamResponse, SpamBatchResponse))
async def predict_spam(request: Request) -> Response:
    """Spam probability of an email: raw RFC 822 with headers, or just a body."""
    body, model = await _begin(request, SpamRequest, "spam", BagOfWords)
    settings: Settings = request.app.state.settings
    encoder: BagOfWords = model.encoder  # type: ignore[assignment]
    texts = body.items()
    _check_batch(settings, texts)

    def encode(text: str) -> np.ndarray:
        if len(text) > settings.max_email_chars:
            raise FeatureError(
                f"text is {len(text)} characters; the limit is {settings.max_email_chars}"
            )
        return encoder.encode(text)

    rows = _encode_each(texts, body.batched, lambda _: "text", encode)
    probabilities = (await _run(model, rows))[:, 1].tolist()
    predictions = [{"spam": p >= settings.spam_threshold, "probability": p} for p in probabilities]
    return _answer(model, predictions, body.batched)


def _digit_tensor(item: DigitItem, settings: Settings) -> np.ndarray:
    if item.image is not None:
        data = decode_base64_image(item.image, settings.max_image_bytes)
        return image_bytes_to_digit(data, settings.max_image_pixels)
    try:
        pixels = np.asarray(item.pixels, dtype=np.float32)
    except ValueError as exc:
        raise FeatureError("pixels must be 784 numbers or 28 rows of 28") from exc
    if pixels.ndim == 2 and pixels.shape != (28, 28):
        raise FeatureError(f"nested pixels must be 28 rows of 28, got {pixels.shape}")
    return pixels_to_digit(pixels)


@router.post("/digit", **_documented(DigitRequest, DigitResponse, DigitBatchResponse))
async def predict_digit(request: Request) -> Response:
    """The handwritten digit in an image of any size and polarity, or in 784 MNIST pixels."""
    body, model = await _begin(request, DigitRequest, "digit", None)
    settings: Settings = request.app.state.settings
    items = body.items()
    _check_batch(settings, items)
    batched = body.batched

    def encode(item: DigitItem) -> np.ndarray:
        return _digit_tensor(item, settings)[np.newaxis]

    def field_of(item: DigitItem) -> str:
        return "image" if item.image is not None else "pixels"

    if any(item.image is not None for item in items):
        # Decoding images costs milliseconds: keep it off the event loop.
        rows = await run_in_threadpool(_encode_each, items, batched, field_of, encode)
    else:
        rows = _encode_each(items, batched, field_of, encode)
    probabilities = await _run(model, rows)
    predictions = [
        {"digit": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities
    ]
    return _answer(model, predictions, batched)

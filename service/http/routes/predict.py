"""The domain endpoints: /predict/wine, /predict/spam, /predict/digit.

Each reads top-down: validated body -> shared preprocessing per item -> the model's runner ->
response. A `version` query parameter pins a model version; without it the highest ready
version answers. The routes take the raw request (see service/http/body.py for why); what they share
with /explain/* is in service/http/routes/common.py.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.config import Settings
from service.errors import BatchTooLarge, InvalidInput
from service.features import BagOfWords, GuestEncoder
from service.features.spam import TextKind
from service.http.pixel_body import read_pixels
from service.http.routes.common import (
    answer,
    begin,
    digit_rows,
    documented,
    encode_each,
    model_encoder,
    spam_rows,
    spam_threshold,
    test_pattern,
)
from service.http.schemas import (
    DigitBatchResponse,
    DigitRequest,
    DigitResponse,
    SpamBatchResponse,
    SpamRequest,
    SpamResponse,
    WineBatchResponse,
    WineRequest,
    WineResponse,
)
from service.models.loading import ServingModel
from service.nnserve import NNServe

router = APIRouter(prefix="/predict", tags=["predict"])


def _check_batch(settings: Settings, items: Sequence[Any]) -> None:
    if len(items) > settings.max_batch_size:
        raise BatchTooLarge(f"batch of {len(items)} items is over the limit of {settings.max_batch_size}")
    if not items:
        raise InvalidInput("batch: give at least one item")


Rows = Callable[[ServingModel], Awaitable[np.ndarray]]
Feeds = Callable[[ServingModel], Awaitable[dict[str, np.ndarray]]]


async def _run(
    request: Request,
    model: ServingModel,
    feeds: Feeds,
    kinds: tuple[TextKind, ...] | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """The model's first output (the card's) for the request's items as `feeds` prepares them for
    a version; a shadow version gets them prepared by its own card (its vocabulary, even its
    input tensors, may differ), and its verdicts judged as the client's were (`kinds`,
    `threshold`: see DataPlane.infer)."""
    held = len(await request.body())  # what `feeds` holds (the items) until a shadow has run
    dataplane = NNServe.of(request).dataplane
    return (await dataplane.infer(model, await feeds(model), feeds, held, kinds, threshold))[0]


def _first_input(rows: Rows) -> Feeds:
    """Feeds of one tensor: the model's only input."""

    async def feeds(version: ServingModel) -> dict[str, np.ndarray]:
        return {version.card.inputs[0].name: await rows(version)}

    return feeds


@router.post("/wine", **documented(WineRequest, WineResponse | WineBatchResponse))
async def predict_wine(request: Request) -> Response:
    """Bottles of wine for a dinner party: the guest list in, bottles out (you included)."""
    body, model = await begin(request, WineRequest, "wine")
    model_encoder(model, GuestEncoder)
    guest_lists = body.items()
    _check_batch(NNServe.of(request).settings, guest_lists)

    async def rows(version: ServingModel) -> np.ndarray:
        encode = model_encoder(version, GuestEncoder).encode
        return encode_each(guest_lists, body.batched, lambda _: "guests", encode)

    bottles = [round(b, 4) for b in (await _run(request, model, _first_input(rows)))[:, 0].tolist()]
    predictions = [{"bottles": b, "buy": math.ceil(b)} for b in bottles]
    return answer(model, predictions, body.batched)


@router.post("/spam", **documented(SpamRequest, SpamResponse | SpamBatchResponse))
async def predict_spam(request: Request) -> Response:
    """Spam probability of an email: raw RFC 822 with headers, or just a body. A text holding a
    test pattern (GTUBE) is answered by the pattern, without running the network on it."""
    body, model = await begin(request, SpamRequest, "spam")
    settings: Settings = NNServe.of(request).settings
    encoder = model_encoder(model, BagOfWords)
    texts = body.items()
    _check_batch(settings, texts)
    rows = spam_rows(settings, encoder, texts, body.batched)
    patterns = [test_pattern(request, model, text) for text in texts]
    judged = [n for n, pattern in enumerate(patterns) if pattern is None]
    probabilities: list[float] = []
    if judged:
        judged_texts = [texts[n] for n in judged]
        served = encoder.feeds([rows[n] for n in judged])

        async def feeds(version: ServingModel) -> dict[str, np.ndarray]:
            if version is model:
                return served
            other = model_encoder(version, BagOfWords)
            return other.feeds(spam_rows(settings, other, judged_texts, body.batched))

        kinds = tuple(encoder.kind(rows[n]) for n in judged)
        run = await _run(request, model, feeds, kinds, settings.spam_threshold)
        probabilities = run[:, 1].tolist()
    verdicts = iter(zip([rows[n] for n in judged], probabilities, strict=True))
    predictions: list[dict[str, Any]] = []
    for pattern in patterns:
        if pattern is None:
            row, p = next(verdicts)
            predictions.append({"spam": p >= spam_threshold(model, settings, encoder, row), "probability": p})
        else:
            predictions.append({"spam": True, "probability": 1.0, "test_pattern": pattern})
    return answer(model, predictions, body.batched)


@router.post("/digit", **documented(DigitRequest, DigitResponse | DigitBatchResponse))
async def predict_digit(request: Request) -> Response:
    """The handwritten digit in an image of any size and polarity, or in 784 MNIST pixels."""
    body, model = await begin(request, DigitRequest, "digit", read_pixels)
    settings: Settings = NNServe.of(request).settings
    items = body.items()
    _check_batch(settings, items)

    async def rows(version: ServingModel) -> np.ndarray:
        return await digit_rows(version, items, body.batched, settings)

    probabilities = await _run(request, model, _first_input(rows))
    predictions = [{"digit": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities]
    return answer(model, predictions, body.batched)

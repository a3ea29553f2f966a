"""What the domain routes (/predict/*, /explain/*) share: documenting a raw-request route, the
preamble every request runs (key, body, model), encoding items with each failure named by where
it is, and the answer's shape. One copy, so a prediction and its explanation cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from service import deadline
from service.card import MnistNormalisation, ModelCard
from service.config import Settings
from service.errors import ApiError, InvalidInput, ModelNotReady, PayloadTooLarge
from service.features import (
    BagOfWords,
    FeatureError,
    GuestEncoder,
    ImageTooLargeError,
    PixelBudget,
    TokenIds,
    UnknownGuestError,
    decode_base64_image,
    image_bytes_to_digit,
    pixel_grid,
    pixels_to_digits,
)
from service.features.spam import EmailText, read_email
from service.http.auth import check_api_key
from service.http.body import json_body, json_response, parse_json
from service.http.schemas import DigitItem, ErrorResponse
from service.models.loading import ServingModel
from service.models.traffic import TRAFFIC_KEY_HEADER
from service.nnserve import NNServe

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503, 504)
}
_TRAFFIC_KEY = TRAFFIC_KEY_HEADER.encode()
Item = TypeVar("Item")
Body = TypeVar("Body", bound=BaseModel)
Encoder = TypeVar("Encoder", GuestEncoder, BagOfWords)
Out = TypeVar("Out")
_VERSION_PARAMETER = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "model version; default: the highest ready one",
    "schema": {"type": "integer", "minimum": 1},
}


def documented(request_model: type, response_model: Any) -> dict[str, Any]:
    """Route options that document a raw-request route: its JSON body, its `version` query
    parameter (read by begin, which costs less than FastAPI's dependency machinery) and its
    answers (`response_model` may be a union: one item or a batch)."""
    return {
        "openapi_extra": json_body(request_model) | {"parameters": [_VERSION_PARAMETER]},
        "responses": {200: {"model": response_model}, **ERRORS},
        "response_class": Response,
    }


async def begin(
    request: Request,
    body_model: type[Body],
    name: str,
    fast: Callable[[bytes], Body | None] | None = None,
) -> tuple[Body, ServingModel]:
    """What every prediction does first: check the key, validate the body (`fast` reads its plain
    forms, see parse_json), find the model version the request asks for (`?version=N`) or the one
    the traffic policy picks for the client's X-Traffic-Key (service/models/traffic.py), by default the
    highest ready one."""
    check_api_key(request)
    body = await parse_json(request, body_model, fast)
    dataplane = NNServe.of(request).dataplane
    return body, dataplane.model(name, request.query_params.get("version"), traffic_key(request))


def traffic_key(request: Request) -> bytes | None:
    """The client's X-Traffic-Key as it was sent: its bytes pick the version, on every protocol
    (Starlette's `headers` would hand them over decoded as latin-1)."""
    for header, value in request.scope["headers"]:
        if header == _TRAFFIC_KEY:
            return bytes(value)
    return None


def training_card(model: ServingModel) -> ModelCard:
    """The model's training card: the domain routes prepare inputs as it says, so a drop-in
    model (no such card) is served by V2 inference only."""
    if not isinstance(model.card, ModelCard):
        raise ModelNotReady(
            f"{model.name} v{model.version} is a drop-in model without a training card: "
            f"use /v2/models/{model.name}/infer"
        )
    return model.card


def model_encoder(model: ServingModel, kind: type[Encoder]) -> Encoder:
    """The model's preprocessing table, if its card declares the kind this route encodes with."""
    training_card(model)
    if not isinstance(model.encoder, kind):
        raise ModelNotReady(f"model {model.name!r} does not take {kind.__name__}")
    return model.encoder


def feature_error(exc: FeatureError, where: str) -> ApiError:
    details: dict[str, Any] = {"loc": where}
    if isinstance(exc, UnknownGuestError):
        details |= {"unknown": exc.unknown, "known_guests": exc.roster}
    error = PayloadTooLarge if isinstance(exc, ImageTooLargeError) else InvalidInput
    return error(f"{where}: {exc}", details)


def encode_rows(
    items: Sequence[Item],
    batched: bool,
    field_of: Callable[[Item], str],
    encode: Callable[[Item], Out],
) -> list[Out]:
    """Encodes every item; the first one that fails is reported by its index in the batch."""
    rows = []
    for index, item in enumerate(items):
        try:
            rows.append(encode(item))
        except FeatureError as exc:
            where = f"batch.{index}.{field_of(item)}" if batched else field_of(item)
            raise feature_error(exc, where) from exc
    return rows


def encode_each(
    items: Sequence[Item],
    batched: bool,
    field_of: Callable[[Item], str],
    encode: Callable[[Item], np.ndarray],
) -> np.ndarray:
    """encode_rows, stacked into one tensor."""
    return np.stack(encode_rows(items, batched, field_of, encode))


def email_reader(settings: Settings) -> Callable[[str], EmailText]:
    """An email as read_email reads it, refusing a text over the length limit."""

    def read(text: str) -> EmailText:
        if len(text) > settings.max_email_chars:
            raise FeatureError(f"text is {len(text)} characters; the limit is {settings.max_email_chars}")
        return read_email(text)

    return read


def email_encoder(settings: Settings, encoder: BagOfWords) -> Callable[[str], np.ndarray]:
    """An email's bag of words, refusing a text over the length limit."""
    read = email_reader(settings)
    return lambda text: encoder.encode(read(text))


def spam_rows(
    settings: Settings, encoder: BagOfWords, texts: Sequence[str], batched: bool
) -> list[np.ndarray]:
    """Each text's encoded row (the first that fails is named by its index in the batch)."""
    return encode_rows(texts, batched, lambda _: "text", email_encoder(settings, encoder))


def test_pattern(request: Request, model: ServingModel, text: str) -> str | None:
    """The test pattern (GTUBE) the text contains, among those the card of any ready version of
    the model names: a pattern is the model's, not one version's, so a client pinned to an older
    version, or sent to one by a canary, gets the same answer to a filter's end-to-end test."""
    for version in NNServe.of(request).dataplane.entry(model.name).versions.values():
        encoder = version.serving.encoder if version.serving is not None else None
        if isinstance(encoder, TokenIds) and (pattern := encoder.test_pattern(text)) is not None:
            return pattern
    return None


def spam_threshold(model: ServingModel, settings: Settings, encoder: BagOfWords, row: np.ndarray) -> float:
    """The probability at which this encoded text is called spam: NNSERVE_SPAM_THRESHOLD when an
    operator sets it; else the card's for the text's kind (an email with headers, or a bare text),
    chosen at training time on validation splits; else 0.5."""
    return training_card(model).decision_threshold(settings.spam_threshold, encoder.kind(row))


def _pixel_grid(item: DigitItem) -> np.ndarray:
    try:
        pixels = np.asarray(item.pixels, dtype=np.float32)
    except ValueError as exc:
        raise FeatureError("pixels must be 784 numbers or 28 rows of 28") from exc
    if pixels.ndim == 2 and pixels.shape != (28, 28):
        raise FeatureError(f"nested pixels must be 28 rows of 28, got {pixels.shape}")
    return pixel_grid(pixels)


async def digit_rows(
    model: ServingModel, items: Sequence[DigitItem], batched: bool, settings: Settings
) -> np.ndarray:
    """Each item's 1x28x28 image, normalised as the model's card says, stacked, within the
    request's pixel budget and deadline (service/deadline.py). Images are normalised one by one
    as they are decoded; the pixel items are checked one by one (a fault is named by its item)
    and normalised together, in one call for the whole batch."""
    preprocessing = training_card(model).preprocessing
    if not isinstance(preprocessing, MnistNormalisation):
        raise ModelNotReady(f"model {model.name!r} does not take digit images")
    noise_floor = preprocessing.noise_floor
    budget = PixelBudget(settings.max_image_side**2, settings.max_request_pixels)
    during = "while its images were decoded"

    def encode(item: DigitItem) -> np.ndarray:
        """An image's normalised 28x28, or a pixel item's checked but not yet normalised one."""
        deadline.check(during)
        if item.image is not None:
            data = decode_base64_image(item.image, settings.max_image_bytes)
            return image_bytes_to_digit(data, budget, noise_floor)
        return _pixel_grid(item)

    def field_of(item: DigitItem) -> str:
        return "image" if item.image is not None else "pixels"

    def encode_all() -> np.ndarray:
        grids = encode_each(items, batched, field_of, encode)
        pixel_items = [index for index, item in enumerate(items) if item.image is None]
        if len(pixel_items) == len(items):
            return pixels_to_digits(grids, noise_floor)[:, np.newaxis]
        if pixel_items:
            grids[pixel_items] = pixels_to_digits(grids[pixel_items], noise_floor)
        return grids[:, np.newaxis]

    if any(item.image is not None for item in items):
        # Decoding images costs milliseconds: off the event loop, in the decoding threads.
        return await deadline.in_thread(settings.decode_threads, encode_all, during)
    return encode_all()


def answer(model: ServingModel, predictions: list[dict[str, Any]], batched: bool) -> Response:
    ref = {"name": model.name, "version": model.version}
    if batched:
        return json_response({"predictions": predictions, "model": ref})
    return json_response({**predictions[0], "model": ref})

"""The explanation endpoints: /explain/wine, /explain/spam, /explain/digit.

Each takes what its /predict/* route takes, for one item, with the same key check, errors and
`?version=`, and answers the prediction plus why (service/explain/). A batch is refused with 422:
an explanation already runs the network on many variants of its one item. These are separate
routes from /predict/*, whose path they never touch; their rows queue on each model's
explanation runner, with its own executor and limits (NNSERVE_EXPLAIN_*), so a burst of
explanations cannot hold predictions up behind it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.config import Settings
from service.errors import InvalidInput
from service.explain import digit, spam, wine
from service.features import BagOfWords, GuestEncoder
from service.http.pixel_body import read_pixels
from service.http.routes.common import (
    answer,
    begin,
    digit_rows,
    documented,
    email_reader,
    encode_each,
    encode_rows,
    model_encoder,
    spam_threshold,
    test_pattern,
)
from service.http.schemas import (
    DigitExplainRequest,
    DigitExplanation,
    DigitRequest,
    SpamExplainRequest,
    SpamExplanation,
    SpamRequest,
    WineExplainRequest,
    WineExplanation,
    WineRequest,
)
from service.nnserve import NNServe

router = APIRouter(prefix="/explain", tags=["explain"])


def _one_item(batched: bool, route: str) -> None:
    if batched:
        raise InvalidInput(
            f"batch: an explanation is of one item; send it without `batch` (POST /predict/{route} "
            "takes batches)",
            {"loc": "batch"},
        )


@router.post("/wine", **documented(WineExplainRequest, WineExplanation))
async def explain_wine(request: Request) -> Response:
    """Bottles for a party, each guest's exact effect in bottles (the party without them, run by
    the network), and the hidden units' activations next to what each one means."""
    body, model = await begin(request, WineRequest, "wine")
    _one_item(body.batched, "wine")
    encoder = model_encoder(model, GuestEncoder)
    party = encode_each(body.items(), False, lambda _: "guests", encoder.encode)[0]
    return answer(
        model,
        [await wine.explain(NNServe.of(request).dataplane, model, encoder, party)],
        False,
    )


@router.post("/spam", **documented(SpamExplainRequest, SpamExplanation))
async def explain_spam(request: Request) -> Response:
    """The spam probability and log-odds, the words that pushed it toward spam and toward ham with
    their exact effect on both (the email without each word, run by the network), and the tokens
    the model read."""
    body, model = await begin(request, SpamRequest, "spam")
    _one_item(body.batched, "spam")
    settings: Settings = NNServe.of(request).settings
    encoder = model_encoder(model, BagOfWords)
    texts = body.items()
    (parsed,) = encode_rows(texts, False, lambda _: "text", email_reader(settings))
    row = encoder.encode(parsed)
    explanation = await spam.explain(
        NNServe.of(request).dataplane,
        model,
        encoder,
        parsed,
        row,
        settings.explain_max_words,
        spam_threshold(model, settings, encoder, row),
        test_pattern(request, model, texts[0]),
    )
    return answer(model, [explanation], False)


@router.post("/digit", **documented(DigitExplainRequest, DigitExplanation))
async def explain_digit(request: Request) -> Response:
    """The digit, the runner-up and the margin, the normalised image the model saw, and an
    occlusion map: how much hiding each patch of it lowers the digit's probability."""
    body, model = await begin(request, DigitRequest, "digit", read_pixels)
    _one_item(body.batched, "digit")
    rows = await digit_rows(model, body.items(), False, NNServe.of(request).settings)
    return answer(model, [await digit.explain(NNServe.of(request).dataplane, model, rows[0])], False)

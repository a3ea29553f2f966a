"""Request and response bodies, with examples that work when tried from /docs.

Each endpoint takes either one item or `{"batch": [...]}`; one body model per endpoint with a
check that exactly one form is used keeps the error messages plain (a union of two models would
report every way the body failed to match both).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

GuestName = Annotated[str, Field(min_length=1, max_length=64)]
MAX_GUESTS = 64
# A held-out MNIST "7" drawn dark on light, as a person would draw it: the /docs example.
SEVEN_PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAABB0lEQVR42tWTvUpDQRCF9+4nKAH1CeJP/EEbC8FSRMRgYy2I"
    "pQi2FoIvYGehkiIPkE5Q7MQgBKxsbExySytTKAoBm4Aci5vL3V1y7T3VzvlmhpllN5LJlzX/CQ4F8VmvXTMLzSSI3D0bL41r"
    "GWPsbCsx1NfbWrE4hl0BYCLxUng/BUD8ET9MwpYPN4HC5ZOkQ5h59+DdKEw/SpK24UgeLMNqXZI+a+P9Uwavltc7kqRTWOrI"
    "h6luRxiuKAdaqCoHnhhrYyfVvbves40u5hzDqfuuYve+NLBtdwfOfzQYtmDeHy+D7X0WX/PgLlQULJYO1uyag43wKaRZx5Ti"
    "oDBrW+cmZIr++g6/dEl+rWntAu0AAAAASUVORK5CYII="
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OneOrBatch(_Strict):
    """A request body holding one item or a `batch` of them; routes handle both as a list."""

    batch: list[Any] | None = None

    @property
    def batched(self) -> bool:
        return self.batch is not None


def _with_examples(*examples: dict[str, Any]) -> ConfigDict:
    """Strict, with request examples that /docs offers to try (each one works)."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


def _exactly_one(model: BaseModel, *fields: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(repr(f) for f in fields)}")


class ModelRef(BaseModel):
    name: str
    version: int


# ----------------------------------------------------------------------------- wine


class WineItem(_Strict):
    guests: list[GuestName] = Field(max_length=MAX_GUESTS, description="names from the roster")


class WineRequest(_OneOrBatch):
    model_config = _with_examples(
        {"guests": ["Dahlia", "Stiffy"]},
        {"batch": [{"guests": []}, {"guests": ["Agatha", "Bertie"]}]},
    )
    guests: list[GuestName] | None = Field(None, max_length=MAX_GUESTS)
    batch: list[WineItem] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _exactly_one(self, "guests", "batch")
        return self

    def items(self) -> list[list[str]]:
        """Each party's guest list."""
        return [item.guests for item in self.batch] if self.batch is not None else [self.guests or []]


class WinePrediction(BaseModel):
    bottles: float = Field(description="predicted bottles for the party, you included")
    buy: int = Field(description="bottles to buy: the prediction rounded up")


class WineResponse(WinePrediction):
    model: ModelRef


class WineBatchResponse(BaseModel):
    predictions: list[WinePrediction]
    model: ModelRef


# ----------------------------------------------------------------------------- spam

_SPAM_EXAMPLE = (
    "Subject: You have WON a FREE prize!!!\n\n"
    "Click here to claim your $1,000,000 cash prize now. Limited time offer, act now!"
)


class SpamItem(_Strict):
    text: str = Field(min_length=1, description="a raw RFC 822 email with headers, or just a body")


class SpamRequest(_OneOrBatch):
    model_config = _with_examples(
        {"text": _SPAM_EXAMPLE},
        {"batch": [{"text": _SPAM_EXAMPLE}, {"text": "Lunch at noon tomorrow?"}]},
    )
    text: str | None = Field(None, min_length=1)
    batch: list[SpamItem] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _exactly_one(self, "text", "batch")
        return self

    def items(self) -> list[str]:
        """Each email's text."""
        return [item.text for item in self.batch] if self.batch is not None else [self.text or ""]


class SpamPrediction(BaseModel):
    spam: bool
    probability: float = Field(ge=0.0, le=1.0, description="probability that the email is spam")
    test_pattern: str | None = Field(
        None,
        description='present when the text holds a test pattern the model\'s card names ("GTUBE", '
        "SpamAssassin's test string): then it is spam with probability 1, whatever its words",
    )


class SpamResponse(SpamPrediction):
    model: ModelRef


class SpamBatchResponse(BaseModel):
    predictions: list[SpamPrediction]
    model: ModelRef


# ----------------------------------------------------------------------------- digit

# Numbers only: no "0.5", no true. Left to right: pydantic's default (smart) mode also tries the
# nested form on a flat list and keeps an error per number; a 1 MB list of zeros cost 160 MB.
Pixels = Annotated[list[StrictFloat] | list[list[StrictFloat]], Field(union_mode="left_to_right")]


class DigitItem(_Strict):
    image: str | None = Field(
        None, description="base64 PNG or JPEG, or a data: URL as a canvas's toDataURL() gives"
    )
    pixels: Pixels | None = Field(
        None, description="784 numbers or 28x28 nested, in [0, 1], light digit on dark"
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _exactly_one(self, "image", "pixels")
        return self


class DigitRequest(DigitItem, _OneOrBatch):
    model_config = _with_examples({"image": SEVEN_PNG}, {"pixels": [0.0] * 784})
    batch: list[DigitItem] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        _exactly_one(self, "image", "pixels", "batch")
        return self

    def items(self) -> list[DigitItem]:
        return self.batch if self.batch is not None else [self]


class DigitPrediction(BaseModel):
    digit: int = Field(ge=0, le=9)
    probabilities: list[float] = Field(min_length=10, max_length=10)


class DigitResponse(DigitPrediction):
    model: ModelRef


class DigitBatchResponse(BaseModel):
    predictions: list[DigitPrediction]
    model: ModelRef


# ----------------------------------------------------------------------------- operations


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="'<name>/<version>' -> 'ready' or why it is not")


class ModelVersionInfo(BaseModel):
    version: int
    ready: bool
    error: str | None = None
    task: str | None = None
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    labels: list[str] | None = None
    preprocessing: dict[str, Any] = Field(
        {}, description="what the service does to inputs: the roster, the vocabulary's size, ..."
    )
    metrics: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    card: Literal["training", "small", "none"] | None = Field(
        None,
        description="training: a card written by our training code; small: a drop-in model's "
        "optional card; none: a drop-in model described by its graph alone",
    )
    description: str | None = None
    example: dict[str, Any] | None = Field(None, description="a drop-in's V2 inference request that works")


class TrafficRequest(BaseModel):
    """A model's whole traffic policy; what is left out is cleared (`{}` clears both)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"weights": {"2": 90, "1": 10}, "shadow": None}]}
    )
    # Strict: JSON's `true` and `"50"` are not numbers, and a policy that routes live traffic is
    # taken as written or refused, never guessed at (issue 30).
    weights: dict[str, StrictInt] | None = Field(
        None, description="version -> whole percentage of the requests that name no version; adding up to 100"
    )
    shadow: StrictInt | None = Field(None, description="a version run beside every request, off its path")


class TrafficInfo(BaseModel):
    weights: dict[str, int] | None
    shadow: int | None


class ModelInfo(BaseModel):
    name: str
    latest_ready_version: int | None = Field(
        description="the version answering requests that name none and carry no canary split: "
        "the highest ready one that is not a shadow"
    )
    traffic: TrafficInfo | None = Field(None, description="canary weights and shadow version, if set")
    versions: list[ModelVersionInfo]


class ErrorResponse(BaseModel):
    error: str
    code: str
    details: Any = None


# ----------------------------------------------------------------------------- explanations
# /explain/* take one item in the shape /predict/* takes it (a batch is refused with 422) and
# answer the prediction plus why. Examples are answers of the committed version 1 models
# (tests/test_docs_examples.py asks them).


class WineExplainRequest(WineItem):
    model_config = _with_examples(
        {"guests": ["Dahlia", "Stiffy"]}, {"guests": ["Agatha", "Dahlia", "Stiffy"]}
    )


class SpamExplainRequest(SpamItem):
    model_config = _with_examples({"text": _SPAM_EXAMPLE}, {"text": "Lunch at noon tomorrow?"})


class DigitExplainRequest(DigitItem):
    model_config = _with_examples({"image": SEVEN_PNG})


class GuestEffect(BaseModel):
    guest: str
    effect: float = Field(description="bottles with the party as given minus bottles without this guest")
    bottles_without: float = Field(description="/predict/wine's answer for the party without this guest")


class HiddenUnitActivation(BaseModel):
    unit: int
    activation: float = Field(ge=0.0, description="the unit's ReLU output for this party")
    active: bool
    weight_out: float = Field(description="bottles per unit of activation, into the output")
    contribution: float = Field(description="activation x weight_out: bottles this unit adds")
    meaning: str = Field(description="worked out at training time, from the model card")


class HiddenLayerExplanation(BaseModel):
    available: bool = Field(description="false when the version has no usable hidden-layer graph")
    reason: str | None = Field(description="why the hidden layer is unavailable")
    output_bias: float | None = Field(
        description="bottles before any unit: bias + sum of contributions, floored at 0, is the answer"
    )
    units: list[HiddenUnitActivation]


class WineExplanation(WineResponse):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bottles": 4.3184,
                    "buy": 5,
                    "guests": [
                        {"guest": "Dahlia", "effect": 2.8179, "bottles_without": 1.5005},
                        {"guest": "Stiffy", "effect": 1.2671, "bottles_without": 3.0513},
                    ],
                    "hidden": {
                        "available": True,
                        "reason": None,
                        "output_bias": 0.1543,
                        "units": [
                            {
                                "unit": 10,
                                "activation": 0.0,
                                "active": False,
                                "weight_out": -0.9274,
                                "contribution": 0.0,
                                "meaning": "on when Agatha comes; takes away 0.93 bottles per unit",
                            }
                        ],
                    },
                    "model": {"name": "wine", "version": 1},
                }
            ]
        }
    )
    guests: list[GuestEffect] = Field(description="each guest of the party, in roster order")
    hidden: HiddenLayerExplanation


class WordEffect(BaseModel):
    word: str = Field(description='a word of the text, or "<headers>": the email came with a header block')
    effect: float = Field(description="probability with the word minus without it (every occurrence)")
    log_odds_effect: float | None = Field(
        description="log-odds (the logit) with the word minus without it; null where a log-odds is "
        "infinite (a probability of exactly 0 or 1 in float32)"
    )


class TokenSpan(BaseModel):
    token: str = Field(description="as the model saw it: lowercased")
    start: int = Field(ge=0, description="offset in `text`, in code points (JavaScript: Array.from(text))")
    end: int = Field(ge=0)
    known: bool = Field(description="in the model's vocabulary; unknown words are ignored by the model")
    effect: float | None = Field(description="the word's effect; null if unknown or not examined")
    log_odds_effect: float | None = Field(description="the word's effect on the log-odds; null likewise")


class SpamExplanation(SpamResponse):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "spam": True,
                    "probability": 0.5873,
                    "log_odds": 0.3526,
                    "threshold": 0.5,
                    "spam_ward": [{"word": "lunch", "effect": 0.0673, "log_odds_effect": 0.2727}],
                    "ham_ward": [
                        {"word": "tomorrow", "effect": -0.033, "log_odds_effect": -0.1381},
                        {"word": "noon", "effect": -0.0323, "log_odds_effect": -0.135},
                        {"word": "at", "effect": -0.02, "log_odds_effect": -0.0832},
                    ],
                    "known_words": 4,
                    "examined": 4,
                    "capped": False,
                    "note": None,
                    "text": "Lunch at noon tomorrow?",
                    "tokens": [
                        {
                            "token": "lunch",
                            "start": 0,
                            "end": 5,
                            "known": True,
                            "effect": 0.0673,
                            "log_odds_effect": 0.2727,
                        },
                        {
                            "token": "at",
                            "start": 6,
                            "end": 8,
                            "known": True,
                            "effect": -0.02,
                            "log_odds_effect": -0.0832,
                        },
                        {
                            "token": "noon",
                            "start": 9,
                            "end": 13,
                            "known": True,
                            "effect": -0.0323,
                            "log_odds_effect": -0.135,
                        },
                        {
                            "token": "tomorrow",
                            "start": 14,
                            "end": 22,
                            "known": True,
                            "effect": -0.033,
                            "log_odds_effect": -0.1381,
                        },
                    ],
                    "model": {"name": "spam", "version": 1},
                }
            ]
        }
    )
    log_odds: float | None = Field(
        description="ln(p / (1 - p)): the logit, where the words' effects add up; null for a test "
        "pattern or a probability of exactly 0 or 1"
    )
    threshold: float = Field(description="the probability at which the email is called spam")
    spam_ward: list[WordEffect] = Field(
        description="up to 10 words that pushed toward spam, strongest (on the log-odds) first"
    )
    ham_ward: list[WordEffect] = Field(
        description="up to 10 words that pushed toward ham, strongest (on the log-odds) first"
    )
    known_words: int = Field(description="distinct words of the model's vocabulary in the email")
    examined: int = Field(description="how many of them were examined (the first, in reading order)")
    capped: bool = Field(description="true when some known words were not examined")
    note: str | None = Field(
        description="says how many were examined when capped, or which test pattern matched"
    )
    text: str = Field(description="what the model read: the subject and body, without headers")
    tokens: list[TokenSpan]


class RunnerUp(BaseModel):
    digit: int = Field(ge=0, le=9)
    probability: float


class HottestPatch(BaseModel):
    top: int = Field(ge=0)
    left: int = Field(ge=0)
    drop: float


class Occlusion(BaseModel):
    patch: int = Field(description="side of each hidden square, in pixels of the 28x28 image")
    stride: int = Field(description="pixels between patches: drops[i][j] is the patch at (i, j) x stride")
    patches_run: int = Field(description="patches with ink, each one network row; blank ones drop 0")
    drops: list[list[float]] = Field(
        description="the predicted digit's probability minus its probability with the patch hidden"
    )
    hottest: HottestPatch


class DigitExplanation(DigitResponse):
    # The answer for a blank image ({"pixels": [0.0] * 784}): nothing to hide, so every drop is 0.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "digit": 1,
                    "probabilities": [
                        0.0021,
                        0.9778,
                        0.003,
                        0.0013,
                        0.0001,
                        0.0027,
                        0.0021,
                        0.0063,
                        0.0006,
                        0.0038,
                    ],
                    "runner_up": {"digit": 7, "probability": 0.0063},
                    "margin": 0.9715,
                    "image": [[0.0] * 28] * 28,
                    "occlusion": {
                        "patch": 4,
                        "stride": 4,
                        "patches_run": 0,
                        "drops": [[0.0] * 7] * 7,
                        "hottest": {"top": 0, "left": 0, "drop": 0.0},
                    },
                    "model": {"name": "digit", "version": 1},
                }
            ]
        }
    )
    runner_up: RunnerUp
    margin: float = Field(description="the digit's probability minus the runner-up's")
    image: list[list[float]] = Field(description="the normalised 28x28 image the model saw, light on dark")
    occlusion: Occlusion

"""Request and response bodies, with examples that work when tried from /docs.

Each endpoint takes either one item or `{"batch": [...]}`; one body model per endpoint with a
check that exactly one form is used keeps the error messages plain (a union of two models would
report every way the body failed to match both).
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator

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


class SpamResponse(SpamPrediction):
    model: ModelRef


class SpamBatchResponse(BaseModel):
    predictions: list[SpamPrediction]
    model: ModelRef


# ----------------------------------------------------------------------------- digit

Pixels = list[StrictFloat] | list[list[StrictFloat]]  # numbers only: no "0.5", no true


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


class ModelInfo(BaseModel):
    name: str
    latest_ready_version: int | None
    versions: list[ModelVersionInfo]


class ErrorResponse(BaseModel):
    error: str
    code: str
    details: Any = None

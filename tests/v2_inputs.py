"""The same inputs as tensors and as /predict bodies, so V2 answers can be checked against the
domain endpoints."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from samples import latest_version, samples

from service.card import ModelCard
from service.features import GuestEncoder, pixels_to_digit
from service.models.loading import spam_encoder

from support.server import MODELS_DIR

PARTY = ["Dahlia", "Stiffy"]
EMAIL = "Subject: You have WON!!!\n\nClick here to claim your FREE $1,000,000 prize now!"


def _card(name: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(
        (MODELS_DIR / name / str(latest_version(name)) / "card.json").read_text()
    )
    return card


DATATYPES = {np.dtype("float32"): "FP32", np.dtype("int64"): "INT64"}


def tensors() -> dict[str, tuple[dict[str, np.ndarray], dict[str, object]]]:
    """model -> (its input tensors by name, two rows each; the /predict batch body for the same
    rows). Spam's are the latest version's: token ids and weights from v3 on."""
    roster = _card("wine")["preprocessing"]["roster"]
    guests = GuestEncoder(roster)
    words = spam_encoder(ModelCard.read(MODELS_DIR / "spam" / str(latest_version("spam"))))
    pixels = [s.input["pixels"] for s in samples("digit")[:2]]
    return {
        "wine": (
            {"guests": np.stack([guests.encode(PARTY), guests.encode([])])},
            {"batch": [{"guests": PARTY}, {"guests": []}]},
        ),
        "spam": (
            words.feeds([words.encode(EMAIL), words.encode("lunch at noon?")]),
            {"batch": [{"text": EMAIL}, {"text": "lunch at noon?"}]},
        ),
        "digit": (
            {"image": np.stack([pixels_to_digit(np.asarray(p))[np.newaxis] for p in pixels])},
            {"batch": [{"pixels": p} for p in pixels]},
        ),
    }


def predict_outputs(name: str, answer: dict[str, Any]) -> np.ndarray:
    """The /predict answer as the model's output tensor."""
    rows = answer["predictions"]
    if name == "wine":
        return np.array([[p["bottles"]] for p in rows])
    if name == "spam":
        return np.array([[1 - p["probability"], p["probability"]] for p in rows])
    return np.array([p["probabilities"] for p in rows])

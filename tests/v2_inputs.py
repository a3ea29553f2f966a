"""The same inputs as tensors and as /predict bodies, so V2 answers can be checked against the
domain endpoints."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from samples import latest_version, samples

from service.features import BagOfWords, GuestEncoder, pixels_to_digit

from support.server import MODELS_DIR

PARTY = ["Dahlia", "Stiffy"]
EMAIL = "Subject: You have WON!!!\n\nClick here to claim your FREE $1,000,000 prize now!"


def _card(name: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(
        (MODELS_DIR / name / str(latest_version(name)) / "card.json").read_text()
    )
    return card


def tensors() -> dict[str, tuple[str, np.ndarray, dict[str, object]]]:
    """model -> (input name, tensor of two rows, the /predict batch body for the same rows)."""
    roster = _card("wine")["preprocessing"]["roster"]
    vocabulary = _card("spam")["preprocessing"]["vocabulary"]
    guests = GuestEncoder(roster)
    words = BagOfWords(vocabulary)
    pixels = [s.input["pixels"] for s in samples("digit")[:2]]
    return {
        "wine": (
            "guests",
            np.stack([guests.encode(PARTY), guests.encode([])]),
            {"batch": [{"guests": PARTY}, {"guests": []}]},
        ),
        "spam": (
            "bag_of_words",
            np.stack([words.encode(EMAIL), words.encode("lunch at noon?")]),
            {"batch": [{"text": EMAIL}, {"text": "lunch at noon?"}]},
        ),
        "digit": (
            "image",
            np.stack([pixels_to_digit(np.asarray(p))[np.newaxis] for p in pixels]),
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

"""What make bench sends: one Case per endpoint and body, built from the committed models' own
held-out samples, so a figure is for an input the model really sees."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.features import pixels_to_digit

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
# A 300-character message typed without headers, as the demo page and most API clients send.
SHORT_SPAM = (
    "Congratulations! You have been selected for a FREE cash prize of $5,000. To claim it, "
    "reply today with your full name, bank account number and a copy of your ID. This "
    "exclusive offer expires at midnight, so act now and don't miss out on your reward! "
    "Click the secure link below to get started."
)
SHORT_SPAM_CASE = f"spam ({len(SHORT_SPAM)} chars, no headers)"


@dataclass
class Case:
    """One request wrk repeats: `model` names the model whose stages bench/stages.py splits."""

    name: str
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"
    header_length: int | None = None
    model: str = ""

    @property
    def headers(self) -> dict[str, str]:
        extra = (
            {} if self.header_length is None else {"Inference-Header-Content-Length": str(self.header_length)}
        )
        return {"Content-Type": self.content_type, **extra}


REFERENCE = Case("constant JSON", "GET", "/")


def latest_version(name: str) -> Path:
    return max((p for p in (MODELS / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _samples(name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((latest_version(name) / "samples.json").read_text())["items"]
    return items


def _v2_digit(pixels: list[float]) -> tuple[bytes, bytes, bytes]:
    """V2 clients send the model's own input, the normalised 28x28 tensor: as JSON, and as the
    binary extension's JSON header and tensor bytes."""
    tensor = pixels_to_digit(np.asarray(pixels, dtype=np.float32))[np.newaxis, np.newaxis]
    image = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32"}
    v2_json = json.dumps({"inputs": [{**image, "data": tensor.ravel().tolist()}]}).encode()
    blob = tensor.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [{**image, "parameters": {"binary_data_size": len(blob)}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return v2_json, header, blob


def bench_email() -> str:
    """The held-out spam sample nearest 2 KB: the bench's email."""
    texts: list[str] = [s["input"]["text"] for s in _samples("spam")]
    return min(texts, key=lambda t: abs(len(t.encode()) - 2048))


def http_cases() -> list[Case]:
    """The REST and V2 endpoints of the three models, predictions and explanations."""
    spam = bench_email()
    pixels = _samples("digit")[0]["input"]["pixels"]
    gray = (255 - np.asarray(pixels).reshape(28, 28) * 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(gray).resize((64, 64)).save(png, "PNG")
    v2_json, header, blob = _v2_digit(pixels)
    party = json.dumps({"guests": ["Dahlia", "Stiffy", "Bertie"]}).encode()
    email = json.dumps({"text": spam}).encode()
    digit = json.dumps({"pixels": pixels}).encode()
    image = json.dumps({"image": base64.b64encode(png.getvalue()).decode()}).encode()
    short = json.dumps({"text": SHORT_SPAM}).encode()
    v2 = "/v2/models/digit/infer"
    return [
        Case("wine (3 guests)", "POST", "/predict/wine", party, model="wine"),
        Case(SHORT_SPAM_CASE, "POST", "/predict/spam", short, model="spam"),
        Case(f"spam ({len(spam.encode())} B email)", "POST", "/predict/spam", email, model="spam"),
        Case("digit (784 pixels)", "POST", "/predict/digit", digit, model="digit"),
        Case("digit (64x64 PNG)", "POST", "/predict/digit", image, model="digit"),
        Case("V2 digit (JSON)", "POST", v2, v2_json, model="digit"),
        Case(
            "V2 digit (binary)", "POST", v2, header + blob, "application/octet-stream", len(header), "digit"
        ),
        Case("explain wine (3 guests)", "POST", "/explain/wine", party, model="wine"),
        Case(f"explain spam ({len(spam.encode())} B email)", "POST", "/explain/spam", email, model="spam"),
        Case("explain digit (784 pixels)", "POST", "/explain/digit", digit, model="digit"),
    ]

"""No train/serve skew, for every committed version of every model: the service answers held-out
inputs exactly as the training pipeline's ONNX evaluation did (samples.json, written by training
when it exported the model), and a spam verdict follows the version's own threshold."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from samples import samples, versions

from support.server import MODELS_DIR

PARITY_ITEMS = 200
EVERY_VERSION = [(name, version) for name in ("wine", "spam", "digit") for version in versions(name)]


def _served(
    client: httpx.Client, name: str, version: int, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    predictions: list[dict[str, Any]] = []
    for start in range(0, len(items), 50):
        response = client.post(
            f"/predict/{name}", params={"version": version}, json={"batch": items[start : start + 50]}
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == {"name": name, "version": version}
        predictions += response.json()["predictions"]
    return predictions


def _card_threshold(version: int) -> float:
    threshold = json.loads((MODELS_DIR / "spam" / str(version) / "card.json").read_text()).get("threshold")
    return 0.5 if threshold is None else threshold


@pytest.mark.parametrize(("name", "version"), EVERY_VERSION, ids=[f"{n}-v{v}" for n, v in EVERY_VERSION])
def test_served_answers_equal_the_training_pipeline(client: httpx.Client, name: str, version: int) -> None:
    held_out = samples(name, version)[:PARITY_ITEMS]
    assert len(held_out) == PARITY_ITEMS
    served = _served(client, name, version, [s.input for s in held_out])
    expected = np.array([s.output for s in held_out])
    if name == "wine":
        got = np.array([[p["bottles"]] for p in served])
        np.testing.assert_allclose(got, expected, atol=1e-4)  # bottles are rounded to 4 places
    elif name == "spam":
        got = np.array([p["probability"] for p in served])
        np.testing.assert_allclose(got, expected[:, 1], atol=1e-6)
        assert [p["spam"] for p in served] == (expected[:, 1] >= _card_threshold(version)).tolist()
    else:
        got = np.array([p["probabilities"] for p in served])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert [p["digit"] for p in served] == expected.argmax(axis=1).tolist()

"""No train/serve skew: the service answers held-out inputs exactly as the training pipeline's
ONNX evaluation did (samples.json, written by training when it exported the model)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from samples import samples

PARITY_ITEMS = 200


def _served(client: httpx.Client, name: str, items: list[dict[str, object]]) -> list[dict]:
    predictions: list[dict] = []
    for start in range(0, len(items), 50):
        response = client.post(f"/predict/{name}", json={"batch": items[start : start + 50]})
        assert response.status_code == 200, response.text
        predictions += response.json()["predictions"]
    return predictions


@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_served_answers_equal_the_training_pipeline(client: httpx.Client, name: str) -> None:
    held_out = samples(name)
    assert len(held_out) >= PARITY_ITEMS
    served = _served(client, name, [s.input for s in held_out[:PARITY_ITEMS]])
    expected = np.array([s.output for s in held_out[:PARITY_ITEMS]])
    if name == "wine":
        got = np.array([[p["bottles"]] for p in served])
        np.testing.assert_allclose(got, expected, atol=1e-4)  # bottles are rounded to 4 places
    elif name == "spam":
        got = np.array([p["probability"] for p in served])
        np.testing.assert_allclose(got, expected[:, 1], atol=1e-6)
    else:
        got = np.array([p["probabilities"] for p in served])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert [p["digit"] for p in served] == expected.argmax(axis=1).tolist()

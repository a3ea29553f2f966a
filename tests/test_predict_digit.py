"""A web page or a script asks which digit is in an image, or in 784 MNIST pixels."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from samples import Sample, samples

from service.card import ModelCard

from support.inprocess import loaded_version
from support.server import MODELS_DIR


def _confident_digit() -> Sample:
    for sample in samples("digit"):
        if max(sample.output) > 0.9 and int(np.argmax(sample.output)) == int(sample.label):
            return sample
    raise AssertionError("no confidently classified held-out digit in samples.json")


def _png(pixels: list[float], size: int, dark_on_light: bool) -> str:
    gray = np.asarray(pixels, dtype=np.float32).reshape(28, 28)
    if dark_on_light:
        gray = 1.0 - gray
    image = Image.fromarray((gray * 255).round().astype(np.uint8)).resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_held_out_pixels_give_the_digit(client: httpx.Client) -> None:
    sample = _confident_digit()
    response = client.post("/predict/digit", json=sample.input)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == int(sample.label)
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)


def test_nested_28x28_pixels_equal_flat_pixels(client: httpx.Client) -> None:
    pixels = _confident_digit().input["pixels"]
    nested = [pixels[row * 28 : (row + 1) * 28] for row in range(28)]
    flat = client.post("/predict/digit", json={"pixels": pixels}).json()
    assert client.post("/predict/digit", json={"pixels": nested}).json() == flat


@pytest.mark.parametrize("dark_on_light", [False, True], ids=["light-on-dark", "dark-on-light"])
def test_a_100px_png_in_either_polarity_gives_the_digit(client: httpx.Client, dark_on_light: bool) -> None:
    sample = _confident_digit()
    image = _png(sample.input["pixels"], 100, dark_on_light)
    for value in (image, "data:image/png;base64," + image):
        response = client.post("/predict/digit", json={"image": value})
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == int(sample.label)


@pytest.mark.parametrize("page", [0.6, 0.8, 1.0])
def test_dark_ink_on_a_grey_page_gives_the_digit(client: httpx.Client, page: float) -> None:
    """A photo's paper is rarely white: any page lighter than mid-grey is read as dark ink on
    light, and inverted."""
    sample = _confident_digit()
    ink = np.asarray(sample.input["pixels"], dtype=np.float64)
    pixels = (page * (1.0 - ink)).tolist()
    assert client.post("/predict/digit", json={"pixels": pixels}).json()["digit"] == int(sample.label)


def test_a_batch_mixes_pixels_and_images_in_order(client: httpx.Client) -> None:
    sample = _confident_digit()
    batch = [sample.input, {"image": _png(sample.input["pixels"], 64, True)}]
    response = client.post("/predict/digit", json={"batch": batch})
    assert response.status_code == 200
    assert [p["digit"] for p in response.json()["predictions"]] == [int(sample.label)] * 2


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"pixels": [0.5] * 783}, "pixels"),
        ({"pixels": [2.0] * 784}, "pixels"),
        ({"image": "not base64!"}, "image"),
        ({"image": base64.b64encode(b"GIF89a not a png").decode()}, "image"),
        ({"image": "data:image/png,rawbytes"}, "image"),
        ({"batch": [{"pixels": [0.0] * 784}, {"pixels": [[0.1] * 28] * 27}]}, "batch.1.pixels"),
    ],
)
def test_bad_digits_are_422_naming_the_field(
    client: httpx.Client, body: dict[str, object], where: str
) -> None:
    response = client.post("/predict/digit", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(where)


def test_both_pixels_and_image_is_refused(client: httpx.Client) -> None:
    response = client.post("/predict/digit", json={"pixels": [0.0] * 784, "image": "AAAA"})
    assert response.status_code == 422
    assert "exactly one" in response.json()["error"]


def test_the_int8_digit_version_is_opened_as_its_card_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """Digit v3's card turns off onnxruntime's QDQ propagation, so that its first max pool runs in
    float beside the float convolution (a third of the call's time saved, the same outputs, as the
    recipe checked). The session the service opens must be opened so; the outputs alone cannot
    tell, which is why the call is watched."""
    folder = MODELS_DIR / "digit" / "3"
    card = ModelCard.read(folder)
    assert card.session.disabled_optimizers == ["QDQPropagationTransformer"]
    opened: list[list[str]] = []

    class Watched(ort.InferenceSession):  # type: ignore[misc]
        def __init__(self, graph: Any, *args: Any, disabled_optimizers: list[str], **kwargs: Any) -> None:
            opened.append(disabled_optimizers)
            super().__init__(graph, *args, disabled_optimizers=disabled_optimizers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Watched)
    with loaded_version("digit", 3, folder) as loaded:
        assert loaded.serving is not None, loaded.error
    assert opened == [["QDQPropagationTransformer"]]

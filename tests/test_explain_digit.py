"""A web page asks why the digit network read the digit it did: the image it saw, an occlusion
map of where the answer came from, and how close the runner-up was."""

from __future__ import annotations

import base64
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from samples import Sample, samples

from support.inprocess import MakeClient
from support.slow_model import SlowModels

THREE_PNG = Path(__file__).parent / "data" / "three.png"


def _confident_digit() -> Sample:
    for sample in samples("digit"):
        if max(sample.output) > 0.9 and int(np.argmax(sample.output)) == int(sample.label):
            return sample
    raise AssertionError("no confidently classified held-out digit in samples.json")


def _explain(client: httpx.Client, item: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/explain/digit", json=item)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _network(client: httpx.Client, images: np.ndarray) -> np.ndarray:
    """The digit network's probabilities for normalised 28x28 images, fed as they are (V2 infer
    runs the model's own input tensor; /predict/digit would normalise an occluded image again,
    recentring its ink, and so feed the network another image)."""
    tensor = np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
    response = client.post(
        "/v2/models/digit/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "shape": list(tensor.shape),
                    "datatype": "FP32",
                    "data": tensor.ravel().tolist(),
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"][0]["data"]).reshape(len(tensor), 10)


def _hidden(image: np.ndarray, top: int, left: int, patch: int) -> np.ndarray:
    occluded = image.copy()
    occluded[top : top + patch, left : left + patch] = 0.0
    return occluded


def test_hiding_the_hottest_patch_lowers_the_probability_by_the_stated_drop(client: httpx.Client) -> None:
    body = _explain(client, _confident_digit().input)
    image = np.asarray(body["image"], dtype=np.float32)
    hottest, patch = body["occlusion"]["hottest"], body["occlusion"]["patch"]
    assert hottest["drop"] > 0.1
    seen, hidden = _network(client, np.stack([image, _hidden(image, hottest["top"], hottest["left"], patch)]))
    assert seen[body["digit"]] == pytest.approx(body["probabilities"][body["digit"]], abs=1e-6)
    assert seen[body["digit"]] - hidden[body["digit"]] == pytest.approx(hottest["drop"], abs=1e-6)


def test_every_patch_of_the_map_is_the_drop_the_network_gives(client: httpx.Client) -> None:
    body = _explain(client, _confident_digit().input)
    image = np.asarray(body["image"], dtype=np.float32)
    occlusion = body["occlusion"]
    patch, stride, drops = occlusion["patch"], occlusion["stride"], np.asarray(occlusion["drops"])
    corners = [(i * stride, j * stride) for i in range(drops.shape[0]) for j in range(drops.shape[1])]
    assert (drops.shape[0] - 1) * stride + patch == 28
    probabilities = _network(
        client, np.stack([image] + [_hidden(image, t, left, patch) for t, left in corners])
    )
    expected = (probabilities[0, body["digit"]] - probabilities[1:, body["digit"]]).reshape(drops.shape)
    assert drops == pytest.approx(expected, abs=1e-6)
    inked = [image[t : t + patch, left : left + patch].any() for t, left in corners]
    assert occlusion["patches_run"] == sum(inked)
    assert drops.max() == occlusion["hottest"]["drop"]


def test_the_image_is_the_one_the_prediction_saw(client: httpx.Client) -> None:
    item = _confident_digit().input
    body = _explain(client, item)
    predicted = client.post("/predict/digit", json=item).json()
    assert body["digit"] == predicted["digit"] and body["probabilities"] == predicted["probabilities"]
    image = np.asarray(body["image"])
    assert image.shape == (28, 28) and 0.0 <= image.min() and image.max() <= 1.0
    # The normalisation is idempotent on its own output: /predict/digit given the image sees it too.
    again = client.post("/predict/digit", json={"pixels": body["image"]}).json()
    assert again["probabilities"] == pytest.approx(predicted["probabilities"], abs=1e-6)


def test_the_runner_up_and_the_margin(client: httpx.Client) -> None:
    body = _explain(client, _confident_digit().input)
    order = np.argsort(body["probabilities"])[::-1]
    assert body["digit"] == order[0] and body["runner_up"]["digit"] == order[1]
    assert body["runner_up"]["probability"] == body["probabilities"][order[1]]
    assert body["margin"] == pytest.approx(body["probabilities"][order[0]] - body["probabilities"][order[1]])


def test_a_drawn_png_is_explained(client: httpx.Client) -> None:
    image = "data:image/png;base64," + base64.b64encode(THREE_PNG.read_bytes()).decode()
    body = _explain(client, {"image": image})
    assert body["digit"] == 3
    drops = np.asarray(body["occlusion"]["drops"])
    assert drops.shape == (7, 7) and drops.max() > 0


def test_a_blank_image_has_nothing_to_hide(client: httpx.Client) -> None:
    body = _explain(client, {"pixels": [0.0] * 784})
    assert body["occlusion"]["patches_run"] == 0
    assert np.asarray(body["occlusion"]["drops"]).max() == 0.0


@pytest.mark.parametrize(
    ("item", "status", "loc"),
    [
        ({"batch": [{"pixels": [0.0] * 784}]}, 422, "batch"),
        ({"pixels": [0.5] * 100}, 422, "pixels"),
        ({"pixels": [2.0] * 784}, 422, "pixels"),
        ({"image": "not base64!"}, 422, "image"),
        ({"image": "iVBORw0KGgo=", "pixels": [0.0] * 784}, 422, "body"),
    ],
    ids=["batch", "short", "out-of-range", "bad-base64", "both"],
)
def test_bad_inputs_are_refused(client: httpx.Client, item: dict[str, Any], status: int, loc: str) -> None:
    response = client.post("/explain/digit", json=item)
    assert response.status_code == status
    assert response.json()["error"].startswith(loc)


def test_an_image_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = make_client(max_image_bytes=100)
    image = base64.b64encode(THREE_PNG.read_bytes()).decode()
    response = client.post("/explain/digit", json={"image": image})
    assert response.status_code == 413
    assert response.json() == client.post("/predict/digit", json={"image": image}).json()


def test_explanations_in_flight_leave_the_prediction_queue_alone(
    make_client: MakeClient, slow_models: SlowModels
) -> None:
    """Each explanation puts dozens of rows in a queue; they wait in the explanations' own
    (NNSERVE_EXPLAIN_*), so a prediction finds its model's queue empty instead of 503."""
    client = make_client(models_dir=slow_models(150, "digit"), max_queued_rows=4)
    item = _confident_digit().input
    with ThreadPoolExecutor(4) as pool:
        explaining = [pool.submit(client.post, "/explain/digit", json=item) for _ in range(3)]
        time.sleep(0.05)  # the explanations' rows are queued or running by now
        assert not any(done.done() for done in explaining), "the explanations finished too soon to test"
        prediction = client.post("/predict/digit", json=item)
        statuses = [done.result().status_code for done in explaining]
    assert prediction.status_code == 200, prediction.text
    assert statuses == [200, 200, 200]


def test_explanations_have_their_own_queue_limit(make_client: MakeClient, slow_models: SlowModels) -> None:
    client = make_client(models_dir=slow_models(50, "digit"), explain_max_queued_rows=4)
    item = _confident_digit().input
    with ThreadPoolExecutor(4) as pool:
        explaining = [pool.submit(client.post, "/explain/digit", json=item) for _ in range(3)]
        statuses = sorted(done.result().status_code for done in explaining)
    assert statuses[0] == 200 and 503 in statuses


def test_explanations_run_on_threads_that_yield_the_cores_to_predictions(make_client: MakeClient) -> None:
    before = set(threading.enumerate())
    client = make_client(explain_nice=7)
    _explain(client, _confident_digit().input)
    explaining = [t for t in set(threading.enumerate()) - before if t.name.startswith("explain")]
    assert explaining, "no explanation thread ran"
    for thread in explaining:
        assert thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == 7
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0

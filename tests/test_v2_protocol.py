"""ML tooling speaks the Open Inference Protocol (KServe V2) over plain HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from samples import latest_version
from v2_inputs import DATATYPES, predict_outputs, tensors

from service.v2.codec import parse_request

from support.server import MODELS_DIR


def test_server_metadata_and_health(client: httpx.Client) -> None:
    metadata = client.get("/v2").json()
    assert metadata["name"] == "nnserve"
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_names_tensors_with_a_dynamic_batch(client: httpx.Client) -> None:
    metadata = client.get("/v2/models/digit").json()
    versions = sorted(int(p.name) for p in (MODELS_DIR / "digit").iterdir() if p.name.isdigit())
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == [str(v) for v in versions]
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert metadata["parameters"] == {"card": "training", "labels": [str(d) for d in range(10)]}
    assert client.get(f"/v2/models/digit/versions/{versions[-1]}").json() == metadata
    assert client.get("/v2/models/digit/ready").json()["ready"] is True
    assert client.get("/v2/models/digit/versions/1/ready").status_code == 200


@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_json_infer_equals_predict(client: httpx.Client, name: str) -> None:
    inputs, body = tensors()[name]
    request = {
        "id": f"req-{name}",
        "inputs": [
            {
                "name": input_name,
                "shape": list(tensor.shape),
                "datatype": DATATYPES[tensor.dtype],
                "data": tensor.ravel().tolist(),
            }
            for input_name, tensor in inputs.items()
        ],
    }
    answer = client.post(f"/v2/models/{name}/infer", json=request).json()
    latest = str(latest_version(name))
    assert (
        answer["id"] == f"req-{name}" and answer["model_name"] == name and answer["model_version"] == latest
    )
    (output,) = answer["outputs"]
    got = np.array(output["data"]).reshape(output["shape"])
    expected = predict_outputs(name, client.post(f"/predict/{name}", json=body).json())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4 if name == "wine" else 1e-6)


def test_nested_data_and_output_selection(client: httpx.Client) -> None:
    (tensor,) = tensors()["wine"][0].values()
    request = {
        "inputs": [{"name": "guests", "shape": [2, 10], "datatype": "FP32", "data": tensor.tolist()}],
        "outputs": [{"name": "bottles"}],
    }
    answer = client.post("/v2/models/wine/versions/1/infer", json=request).json()
    assert answer["outputs"][0]["shape"] == [2, 1] and "id" not in answer


def _binary_digit(
    client: httpx.Client, tensor: np.ndarray, declared: int, extra: bytes = b""
) -> httpx.Response:
    """A digit request in the binary tensor data extension, declaring `declared` tensor bytes."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": list(tensor.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return client.post(
        "/v2/models/digit/infer",
        content=header + tensor.astype("<f4").tobytes() + extra,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )


def test_a_hand_built_binary_request(client: httpx.Client) -> None:
    inputs, body = tensors()["digit"]
    (tensor,) = inputs.values()
    response = _binary_digit(client, tensor, tensor.size * 4)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["Inference-Header-Content-Length"])
    described = json.loads(response.content[:length])["outputs"][0]
    got = np.frombuffer(response.content[length:], dtype="<f4").reshape(described["shape"])
    expected = predict_outputs("digit", client.post("/predict/digit", json=body).json())
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_binary_tensors_are_read_in_place_from_the_body() -> None:
    """No copy of a binary tensor is made on the way in: the array is a view of the body."""
    inputs, _ = tensors()["digit"]
    (tensor,) = inputs.values()
    blob = tensor.astype("<f4").tobytes()
    spec = {"name": "image", "shape": list(tensor.shape), "datatype": "FP32"}
    header = json.dumps({"inputs": [{**spec, "parameters": {"binary_data_size": len(blob)}}]}).encode()
    body = header + blob
    image = parse_request(body, str(len(header)), 256).inputs["image"]
    assert np.shares_memory(image, np.frombuffer(body, dtype=np.uint8))
    np.testing.assert_array_equal(image, tensor)


@pytest.mark.parametrize(
    ("declared", "extra", "words"),
    [
        (2 * 784 * 4 - 4, b"", "does not fit shape"),
        (2 * 784 * 4, b"\0\0\0\0", "more binary bytes"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_400(
    client: httpx.Client, declared: int, extra: bytes, words: str
) -> None:
    (tensor,) = tensors()["digit"][0].values()
    response = _binary_digit(client, tensor, declared, extra)
    assert response.status_code == 400 and words in response.json()["error"]


def test_binary_data_output_asks_for_every_output_in_binary(client: httpx.Client) -> None:
    (tensor,) = tensors()["wine"][0].values()
    request = {
        "inputs": [{"name": "guests", "shape": [2, 10], "datatype": "FP32", "data": tensor.tolist()}],
        "parameters": {"binary_data_output": True},
    }
    for selection in ({}, {"outputs": [{"name": "bottles"}]}):
        response = client.post("/v2/models/wine/infer", json=request | selection)
        length = int(response.headers["Inference-Header-Content-Length"])
        (described,) = json.loads(response.content[:length])["outputs"]
        assert described["parameters"]["binary_data_size"] == len(response.content) - length == 2 * 4
    as_json = {"outputs": [{"name": "bottles", "parameters": {"binary_data": False}}]}
    assert "data" in client.post("/v2/models/wine/infer", json=request | as_json).json()["outputs"][0]


GOOD = {"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}


@pytest.mark.parametrize(
    ("request_body", "words"),
    [
        ({"inputs": [{**GOOD, "data": [0.0] * 9}]}, "needs 10 values"),
        ({"inputs": [{**GOOD, "datatype": "INT64", "data": [0] * 10}]}, "must be FP32"),
        ({"inputs": [{**GOOD, "datatype": "BYTES", "data": ["a"] * 10}]}, "must be FP32"),
        ({"inputs": [{**GOOD, "datatype": "FP99"}]}, "unknown datatype"),
        ({"inputs": [{**GOOD, "name": "visitors"}]}, "unknown input"),
        ({"inputs": []}, "missing input"),
        ({"inputs": [{**GOOD, "shape": [1, 9], "data": [0.0] * 9}]}, "shape"),
        ({"inputs": [{**GOOD, "data": ["0"] * 10}]}, "FP32 values"),
        ({"inputs": [{**GOOD, "data": [1e300] * 10}]}, "out of the FP32 range"),
        ({"inputs": [{**GOOD, "shape": [-1, 10]}]}, "non-negative integers"),
        ({"inputs": [{**GOOD, "shape": [1, 2.5]}]}, "non-negative integers"),
        ({"inputs": [GOOD], "id": 7}, "`id` must be a string"),
        ({"inputs": [GOOD], "outputs": [{"name": "glasses"}]}, "unknown output"),
        ({"nothing": 1}, "inputs"),
    ],
)
def test_malformed_tensors_are_400(client: httpx.Client, request_body: dict[str, Any], words: str) -> None:
    response = client.post("/v2/models/wine/infer", json=request_body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_a_batch_over_the_limit_is_413(client: httpx.Client) -> None:
    rows = 257  # the default NNSERVE_MAX_BATCH_SIZE is 256
    request = {"inputs": [{**GOOD, "shape": [rows, 10], "data": [0.0] * rows * 10}]}
    response = client.post("/v2/models/wine/infer", json=request)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]


def test_unknown_models_and_versions_are_404(client: httpx.Client) -> None:
    assert client.get("/v2/models/cat").status_code == 404
    assert client.get("/v2/models/wine/versions/9").status_code == 404
    assert client.post("/v2/models/wine/versions/x/infer", json={"inputs": [GOOD]}).status_code == 404
    assert "error" in client.post("/v2/models/cat/infer", json={"inputs": [GOOD]}).json()


def test_a_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    response = client.post("/v2/models/wine/infer", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def _spam_request(ids: list[list[int]], weights: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "token_ids", "shape": [len(ids), len(ids[0])], "datatype": "INT64", "data": ids},
            {
                "name": "weights",
                "shape": [len(weights), len(weights[0])],
                "datatype": "FP32",
                "data": weights,
            },
        ]
    }


def test_spam_takes_token_ids_and_weights_and_refuses_ids_it_does_not_know(client: httpx.Client) -> None:
    latest = latest_version("spam")
    metadata = client.get(f"/v2/models/spam/versions/{latest}").json()
    assert metadata["inputs"] == [
        {"name": "token_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "weights", "datatype": "FP32", "shape": [-1, -1]},
    ]
    assert client.get("/v2/models/spam/versions/2").json()["inputs"][0]["name"] == "bag_of_words"
    preprocessing = json.loads((MODELS_DIR / "spam" / str(latest) / "card.json").read_text())["preprocessing"]
    # Spam v4's ids go on past the vocabulary into the spelling pieces' buckets.
    vocabulary = len(preprocessing["vocabulary"]) + (preprocessing.get("subwords") or {}).get("buckets", 0)
    ok = client.post("/v2/models/spam/infer", json=_spam_request([[1, 2, 0]], [[1.0, 1.0, 0.0]]))
    assert ok.status_code == 200, ok.text
    for ids, weights, words in [
        ([[vocabulary, 2]], [[1.0, 1.0]], "token_ids must be in"),
        ([[-1, 2]], [[1.0, 1.0]], "token_ids must be in"),
        ([[1, 2]], [[1.0, 1.0, 0.0]], "one shape"),
    ]:
        response = client.post("/v2/models/spam/infer", json=_spam_request(ids, weights))
        assert response.status_code == 400 and words in response.json()["error"], response.text

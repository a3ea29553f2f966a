"""Triton's own HTTP client, unchanged, against nnserve: binary and JSON tensors both ways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from v2_inputs import DATATYPES, predict_outputs, tensors

from support.server import Server
from support.tools import require_module

OUTPUTS = {"wine": "bottles", "spam": "probabilities", "digit": "probabilities"}


@pytest.fixture(scope="module")
def httpclient() -> Any:  # tritonclient ships no type information
    return require_module("tritonclient.http")


@pytest.fixture(scope="module")
def triton(server: Server, httpclient: Any) -> Iterator[Any]:
    connection = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield connection
    connection.close()


@pytest.mark.smoke
def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("digit") and triton.is_model_ready("wine", "1")
    assert triton.get_server_metadata()["name"] == "nnserve"
    metadata = triton.get_model_metadata("spam")
    assert [i["name"] for i in metadata["inputs"]] == ["token_ids", "weights"]
    assert [i["datatype"] for i in metadata["inputs"]] == ["INT64", "FP32"]
    assert all(i["shape"] == [-1, -1] for i in metadata["inputs"])
    assert triton.get_model_metadata("spam", "2")["inputs"][0]["name"] == "bag_of_words"


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_infer_equals_predict(
    triton: Any, httpclient: Any, server: Server, name: str, binary_in: bool, binary_out: bool
) -> None:
    inputs, body = tensors()[name]
    tensor_inputs = []
    for input_name, tensor in inputs.items():
        tensor_input = httpclient.InferInput(input_name, list(tensor.shape), DATATYPES[tensor.dtype])
        tensor_input.set_data_from_numpy(tensor, binary_data=binary_in)
        tensor_inputs.append(tensor_input)
    requested = httpclient.InferRequestedOutput(OUTPUTS[name], binary_data=binary_out)
    result = triton.infer(name, tensor_inputs, outputs=[requested], request_id="abc")
    got = result.as_numpy(OUTPUTS[name])
    assert result.get_response()["id"] == "abc"
    expected = predict_outputs(name, httpx.post(f"{server.url}/predict/{name}", json=body).json())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4 if name == "wine" else 1e-6)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_a_request_the_client_compresses_is_answered_as_sent_plain(
    triton: Any, httpclient: Any, server: Server, algorithm: str
) -> None:
    """Triton's client compresses the request body when asked (Content-Encoding gzip or deflate);
    the binary tensor's header length counts the decompressed body."""
    inputs, body = tensors()["digit"]
    (input_name, tensor), *_ = inputs.items()
    tensor_input = httpclient.InferInput(input_name, list(tensor.shape), DATATYPES[tensor.dtype])
    tensor_input.set_data_from_numpy(tensor, binary_data=True)
    requested = httpclient.InferRequestedOutput(OUTPUTS["digit"], binary_data=True)
    result = triton.infer(
        "digit", [tensor_input], outputs=[requested], request_compression_algorithm=algorithm
    )
    expected = predict_outputs("digit", httpx.post(f"{server.url}/predict/digit", json=body).json())
    np.testing.assert_allclose(result.as_numpy(OUTPUTS["digit"]), expected, rtol=1e-5, atol=1e-6)

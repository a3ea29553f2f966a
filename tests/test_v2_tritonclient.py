"""Triton's own HTTP client, unchanged, against nnserve: binary and JSON tensors both ways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from v2_inputs import predict_outputs, tensors

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
    assert metadata["inputs"][0]["name"] == "bag_of_words" and metadata["inputs"][0]["shape"][0] == -1


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_infer_equals_predict(
    triton: Any, httpclient: Any, server: Server, name: str, binary_in: bool, binary_out: bool
) -> None:
    input_name, tensor, body = tensors()[name]
    tensor_input = httpclient.InferInput(input_name, list(tensor.shape), "FP32")
    tensor_input.set_data_from_numpy(tensor.astype(np.float32), binary_data=binary_in)
    requested = httpclient.InferRequestedOutput(OUTPUTS[name], binary_data=binary_out)
    result = triton.infer(name, [tensor_input], outputs=[requested], request_id="abc")
    got = result.as_numpy(OUTPUTS[name])
    assert result.get_response()["id"] == "abc"
    expected = predict_outputs(name, httpx.post(f"{server.url}/predict/{name}", json=body).json())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4 if name == "wine" else 1e-6)

"""Someone drops in a model whose run time, memory or output size its inputs set (tests/
dropin_models.py), or one that declares gigabytes of input; clients then send the inputs that
make it hurt. The server stays up and answering: the request's deadline holds and the run is
stopped, /health answers meanwhile, and what onnxruntime cannot do with the inputs is the
client's 4xx (or 507 when memory ran out), never a 500, on both protocols."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from dropin_models import filler_graph, save, spin_graph, v2_request, wide_input_graph

from support.inprocess import MakeClient
from support.server import Server, StartServer
from support.tools import require_module

SPIN_SLOW = 5e6  # loop turns: 10 s and more of onnxruntime, unless stopped
SERVICE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-models")
    save(spin_graph(), folder / "spin" / "1")
    save(filler_graph(), folder / "filler" / "1")
    return folder


@pytest.fixture(scope="module")
def hostile(start_server: StartServer, hostile_models: Path) -> Server:
    return start_server(NNSERVE_MODELS_DIR=str(hostile_models))


@pytest.fixture(scope="module")
def stub(hostile: Server) -> Any:
    grpcclient = require_module("tritonclient.grpc")
    return grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(hostile.grpc_address))


def _rest(server: Server | httpx.Client, model: str, value: float, timeout: float = 10) -> httpx.Response:
    body = v2_request("x" if model == "spin" else "n", np.array([[value]], np.float32))
    headers = {"X-Request-Timeout": str(timeout)}
    if isinstance(server, httpx.Client):
        return server.post(f"/v2/models/{model}/infer", json=body, headers=headers)
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, headers=headers, timeout=60)


def _grpc(stub: Any, model: str, value: float, timeout: float = 10) -> Any:
    grpcclient = require_module("tritonclient.grpc")
    request = grpcclient.service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x" if model == "spin" else "n", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[value]], "<f4").tobytes())
    return stub.ModelInfer(request, timeout=timeout)


def _grpc_failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), dict(error.trailing_metadata() or ())


def test_a_drop_in_made_slow_by_its_input_leaves_health_answering(hostile: Server) -> None:
    """Warmed up on zeros it takes microseconds; this input makes it take seconds. It runs off
    the event loop, so /health answers while it runs."""
    answers: list[httpx.Response] = []
    # a wide deadline, so that /health has time to answer on a busy machine
    slow = threading.Thread(target=lambda: answers.append(_rest(hostile, "spin", SPIN_SLOW, timeout=4)))
    slow.start()
    try:
        assert httpx.get(f"{hostile.url}/health", timeout=10).status_code == 200
        assert slow.is_alive()  # /health answered while the slow request was still running
    finally:
        slow.join()
    assert answers[0].status_code == 504


def test_a_drop_in_made_slow_by_its_input_answers_at_the_deadline_and_stops(hostile: Server) -> None:
    """The client's X-Request-Timeout holds, and the run is stopped: the model's one inference
    thread is free for the next request at once, not seconds later."""
    refused = _rest(hostile, "spin", SPIN_SLOW, timeout=0.2)
    assert refused.status_code == 504 and refused.json()["code"] == "deadline_exceeded"
    assert _rest(hostile, "spin", 0, timeout=3).status_code == 200


def test_over_grpc_the_deadline_holds_and_the_run_stops(stub: Any) -> None:
    code, _ = _grpc_failure(lambda: _grpc(stub, "spin", SPIN_SLOW, timeout=0.2))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _grpc(stub, "spin", 0, timeout=3).outputs[0].name == "y"


@pytest.mark.parametrize(
    ("value", "status", "slug"),
    [
        (-5, 422, "inference_failed"),  # a negative size: the node fails
        (1e13, 507, "insufficient_memory"),  # 40 TB of ones
        (300_000, 422, "output_too_large"),  # 1.2 MB, over the limit set below
    ],
    ids=["node fails", "out of memory", "output over the limit"],
)
def test_what_onnxruntime_cannot_do_with_the_inputs_is_the_clients_answer(
    make_client: MakeClient, hostile_models: Path, value: float, status: int, slug: str
) -> None:
    client = make_client(models_dir=hostile_models, max_output_bytes=1 << 20)
    answer = _rest(client, "filler", value)
    assert (answer.status_code, answer.json()["code"]) == (status, slug)
    assert "onnxruntime_src" not in answer.json()["error"]  # no source path of onnxruntime's
    assert _rest(client, "filler", 3).json()["outputs"][0]["shape"] == [1, 3]


def test_over_grpc_memory_the_inputs_ask_for_is_resource_exhausted(stub: Any) -> None:
    code, trailer = _grpc_failure(lambda: _grpc(stub, "filler", 1e13))
    assert (code, trailer["error-code"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "insufficient_memory")
    code, trailer = _grpc_failure(lambda: _grpc(stub, "filler", -5))
    assert (code, trailer["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "inference_failed")


def test_a_drop_in_declaring_a_huge_input_is_not_ready_and_never_allocates_it(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """A file of a hundred bytes declaring a fixed [1, 2**27] float input (512 MiB, as much
    output): refused before its warm-up allocates anything."""
    save(wide_input_graph(), tmp_path / "wide" / "1")
    ready = make_client(models_dir=tmp_path).get("/ready")
    assert ready.status_code == 503
    state = ready.json()["models"]["wide/1"]
    assert (
        "input 'x' of 536,870,912 bytes exceeds the limit" in state and "NNSERVE_MAX_WARM_UP_BYTES" in state
    )

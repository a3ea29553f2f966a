"""Triton's and KServe's gRPC clients speak the Open Inference Protocol to nnserve unchanged:
tritonclient.grpc against a real server, answering as REST V2 does, with REST's errors as gRPC
statuses (the REST body's message as the details, its slug in the `error-code` trailer)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, cast

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from v2_inputs import tensors

from support.server import Server, StartServer
from support.slow_model import SlowModels
from support.tools import require_module

OUTPUTS = {"wine": "bottles", "digit": "probabilities"}
PREDICTION_KEY, ADMIN_KEY = "prediction-key", "admin-key"
SERVICE = "inference.GRPCInferenceService"
PARTY = {"guests": ["Stiffy"]}


@pytest.fixture(scope="module")
def grpcclient() -> Any:  # tritonclient ships no type information
    return require_module("tritonclient.grpc")


@pytest.fixture(scope="module")
def triton(server: Server, grpcclient: Any) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def keyed(start_server: StartServer) -> Server:
    """A server that asks for keys: a prediction key for inference, an admin key for the repository."""
    return start_server(NNSERVE_API_KEY=PREDICTION_KEY, NNSERVE_ADMIN_KEYS=ADMIN_KEY)


@pytest.fixture(scope="module")
def slow(start_server: StartServer, slow_models: SlowModels) -> Server:
    """A server whose wine model takes about 2 s a call (timed under this machine's load at the
    time, so well over the deadline whatever the load later), within a deadline of 0.5 s, one
    request in flight at a time."""
    return start_server(
        NNSERVE_MODELS_DIR=str(slow_models(2000)),
        NNSERVE_INFERENCE_TIMEOUT_SECONDS="0.5",
        NNSERVE_MAX_IN_FLIGHT="1",
    )


def _tensor(name: str) -> tuple[str, np.ndarray]:
    """The model's one input and two rows of it (tests/v2_inputs.py)."""
    [(input_name, tensor)] = tensors()[name][0].items()
    return input_name, tensor


def _stub(grpcclient: Any, server: Server) -> Any:
    """The protocol's generated stub, for what tritonclient's wrapper hides: typed contents and
    the trailing metadata of an error."""
    channel = grpc.insecure_channel(server.grpc_address)
    return grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _request(grpcclient: Any, name: str, tensor: np.ndarray, *, raw: bool) -> Any:
    request = grpcclient.service_pb2.ModelInferRequest(model_name=name)
    described = request.inputs.add(name=_tensor(name)[0], datatype="FP32", shape=tensor.shape)
    if raw:
        request.raw_input_contents.append(tensor.astype("<f4").tobytes())
    else:
        described.contents.fp32_contents.extend(tensor.ravel().tolist())
    return request


def _rest_v2(server: Server, name: str, tensor: np.ndarray, **extra: Any) -> httpx.Response:
    body = {"inputs": [{"name": _tensor(name)[0], "shape": list(tensor.shape), "datatype": "FP32"}]}
    body["inputs"][0]["data"] = tensor.ravel().tolist()
    return httpx.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=10, **extra)


def _failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value  # a grpc.Call as well as an RpcError
    return error.code(), error.details(), dict(error.trailing_metadata())


def _same_as_rest(failure: tuple[grpc.StatusCode, str, dict[str, str]], rest: httpx.Response) -> None:
    _, details, trailer = failure
    body = rest.json()
    assert (details, trailer["error-code"]) == (body["error"], body["code"])


@pytest.fixture(scope="module")
def split(start_server: StartServer) -> Server:
    """A server whose canary weights split digit and spam between two versions each."""
    return start_server(NNSERVE_TRAFFIC="digit=2:50,1:50;spam=3:50,2:50", NNSERVE_LOG_LEVEL="warning")


@pytest.mark.smoke
def test_live_ready_and_metadata_as_over_rest(split: Server, grpcclient: Any) -> None:
    client = grpcclient.InferenceServerClient(split.grpc_address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digit") and client.is_model_ready("wine", "1")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata == httpx.get(f"{split.url}/v2").json()
    for name in ("wine", "digit"):
        rest = httpx.get(f"{split.url}/v2/models/{name}").json()
        del rest["parameters"]  # the card's kind: REST's addition, not in the protocol's message
        got = client.get_model_metadata(name, as_json=True)
        for tensor in (*got["inputs"], *got["outputs"]):  # protobuf's JSON spells int64 as strings
            tensor["shape"] = [int(d) for d in tensor["shape"]]
        assert got == rest
    client.close()


@pytest.mark.smoke
def test_the_traffic_key_picks_the_version_as_over_rest(split: Server, grpcclient: Any) -> None:
    """Canary weights split by the client's key (x-traffic-key): the same key gets the same
    version whichever protocol it speaks, for inference (digit's versions take the same tensor)
    and for metadata (spam's take other tensors)."""
    stub = _stub(grpcclient, split)
    _, tensor = _tensor("digit")
    metadata = grpcclient.service_pb2.ModelMetadataRequest(name="spam")
    answered, described = {}, {}
    for key in (f"client-{n}" for n in range(12)):
        headers = {"X-Traffic-Key": key}
        grpc_key = [("x-traffic-key", key)]
        inferred = stub.ModelInfer(_request(grpcclient, "digit", tensor, raw=True), metadata=grpc_key)
        answered[key] = inferred.model_version
        assert answered[key] == _rest_v2(split, "digit", tensor, headers=headers).json()["model_version"], key
        rest = httpx.get(f"{split.url}/v2/models/spam", headers=headers, timeout=10).json()
        answer = stub.ModelMetadata(metadata, metadata=grpc_key)
        described[key] = [(t.name, list(t.shape)) for t in answer.inputs]  # v2 and v3 take other tensors
        assert described[key] == [(t["name"], t["shape"]) for t in rest["inputs"]], key
    assert set(answered.values()) == {"1", "2"}, "both versions were picked"
    assert len({repr(inputs) for inputs in described.values()}) == 2, "both versions were picked"


@pytest.mark.parametrize("name", ["wine", "digit"])
def test_raw_infer_equals_rest_v2(triton: Any, grpcclient: Any, server: Server, name: str) -> None:
    """tritonclient.grpc sends raw tensors and reads raw outputs (as_numpy reads nothing else)."""
    input_name, tensor = _tensor(name)
    given = grpcclient.InferInput(input_name, list(tensor.shape), "FP32")
    given.set_data_from_numpy(tensor.astype(np.float32))
    result = triton.infer(name, [given], request_id="abc")
    assert result.get_response().id == "abc"
    (output,) = _rest_v2(server, name, tensor).json()["outputs"]
    expected = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_array_equal(result.as_numpy(OUTPUTS[name]), expected)


@pytest.mark.parametrize("name", ["wine", "digit"])
def test_typed_infer_is_answered_typed_and_equals_rest_v2(grpcclient: Any, server: Server, name: str) -> None:
    _, tensor = _tensor(name)
    response = _stub(grpcclient, server).ModelInfer(_request(grpcclient, name, tensor, raw=False))
    (output,) = response.outputs
    assert not response.raw_output_contents and output.name == OUTPUTS[name]
    got = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(list(output.shape))
    (rest,) = _rest_v2(server, name, tensor).json()["outputs"]
    np.testing.assert_array_equal(got, np.array(rest["data"], dtype=np.float32).reshape(rest["shape"]))


def test_unknown_model_is_not_found(grpcclient: Any, server: Server) -> None:
    _, tensor = _tensor("wine")
    request = _request(grpcclient, "wine", tensor, raw=True)
    request.model_name = "claret"
    failure = _failure(lambda: _stub(grpcclient, server).ModelInfer(request))
    assert failure[0] == grpc.StatusCode.NOT_FOUND
    rest = httpx.post(f"{server.url}/v2/models/claret/infer", json={"inputs": []}, timeout=10)
    _same_as_rest(failure, rest)


def test_a_tensor_of_the_wrong_shape_is_invalid_argument(grpcclient: Any, server: Server) -> None:
    tensor = np.zeros((1, 9), dtype=np.float32)  # wine takes 10 guests
    failure = _failure(
        lambda: _stub(grpcclient, server).ModelInfer(_request(grpcclient, "wine", tensor, raw=True))
    )
    assert failure[0] == grpc.StatusCode.INVALID_ARGUMENT
    _same_as_rest(failure, _rest_v2(server, "wine", tensor))


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_values_a_datatype_cannot_hold_are_invalid_argument(
    grpcclient: Any, server: Server, raw: bool
) -> None:
    tensor = np.full((1, 10), np.nan, dtype=np.float32)
    failure = _failure(
        lambda: _stub(grpcclient, server).ModelInfer(_request(grpcclient, "wine", tensor, raw=raw))
    )
    assert failure[0] == grpc.StatusCode.INVALID_ARGUMENT and failure[2]["error-code"] == "bad_request"


def _malformed(grpcclient: Any) -> dict[str, Any]:
    """Requests a client can get wrong, each in one way."""

    def wine(
        edit: Callable[[Any], object] = lambda _: None,
        *,
        datatype: str = "FP32",
        raw: bool = True,
        **fields: str,
    ) -> Any:
        request = _request(grpcclient, "wine", np.zeros((1, 10), dtype=np.float32), raw=raw)
        request.inputs[0].datatype = datatype
        for field, value in fields.items():
            setattr(request, field, value)
        edit(request)
        return request

    return {
        "negative dimension": wine(lambda r: r.inputs[0].shape.__setitem__(1, -10)),
        "huge dimension": wine(lambda r: r.inputs[0].shape.__setitem__(1, 2**62)),
        "72 dimensions": wine(lambda r: r.inputs[0].shape.extend([1] * 70)),
        "unknown datatype": wine(datatype="FP128"),
        "FP16 typed": wine(datatype="FP16", raw=False),
        "BYTES raw": wine(datatype="BYTES"),
        "INT32 for FP32": wine(datatype="INT32"),
        "raw without its tensor": wine(lambda r: r.raw_input_contents.append(b"")),
        "raw bytes short": wine(lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 39)),
        "typed values missing": wine(lambda r: r.inputs[0].contents.ClearField("fp32_contents"), raw=False),
        "input twice": wine(lambda r: r.inputs.append(r.inputs[0]), raw=False),
        "unknown input": wine(lambda r: setattr(r.inputs[0], "name", "hosts")),
        "unknown output": wine(lambda r: r.outputs.add(name="glasses")),
        "no inputs": wine(lambda r: r.ClearField("inputs"), raw=False),
        "no model name": wine(model_name=""),
        "version not a number": wine(model_version="latest"),
        "version of 30 digits": wine(model_version="9" * 30),
    }


@pytest.mark.smoke  # the codec's checks, on the server the fast ring already runs
def test_no_malformed_request_ends_in_unknown_or_internal(grpcclient: Any, server: Server) -> None:
    stub = _stub(grpcclient, server)
    client_errors = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    codes = {
        name: _failure(partial(stub.ModelInfer, request)) for name, request in _malformed(grpcclient).items()
    }
    wrong = {name: (code, details) for name, (code, details, _) in codes.items() if code not in client_errors}
    assert not wrong
    assert all(trailer["error-code"] for _, _, trailer in codes.values())


def _access_line(server: Server, request_id: str) -> dict[str, Any]:
    log = server.wait_for_log(request_id)
    [line] = [json.loads(line) for line in log.splitlines() if request_id in line]
    return cast(dict[str, Any], line)


def _requests_counted(server: Server, status: str) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    series = f'nnserve_requests_total{{endpoint="/{SERVICE}/ModelInfer",protocol="grpc",status="{status}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(series))


def test_bytes_that_are_not_a_message_are_invalid_argument_logged_and_counted(server: Server) -> None:
    """Bytes no protobuf parser reads, sent as the request: our answer, with neither grpc's
    UNKNOWN nor a Python exception's name, and an access line and a count as for any call."""
    counted = _requests_counted(server, "INVALID_ARGUMENT")
    with grpc.insecure_channel(server.grpc_address) as channel:
        infer: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        code, details, trailer = _failure(
            lambda: infer(b"\x0a\xff\xff\xff\xff\x0f", metadata=(("x-request-id", "not-protobuf"),))
        )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and trailer["error-code"] == "bad_request"
    assert "ModelInferRequest" in details and "Error" not in details
    assert _access_line(server, "not-protobuf")["status"] == "INVALID_ARGUMENT"
    assert _requests_counted(server, "INVALID_ARGUMENT") == counted + 1


def test_a_model_name_of_20000_characters_is_not_found_with_the_name_cut(
    grpcclient: Any, server: Server
) -> None:
    """The status message travels in trailers, which a client takes up to 8 KiB of: a message
    quoting the whole name would end in the client's RESOURCE_EXHAUSTED."""
    request = _request(grpcclient, "wine", np.zeros((1, 10), np.float32), raw=True)
    request.model_name = "w" * 20_000
    code, details, trailer = _failure(lambda: _stub(grpcclient, server).ModelInfer(request))
    assert code == grpc.StatusCode.NOT_FOUND and trailer["error-code"] == "model_not_found"
    assert len(details) <= 1000 and "www" in details


def test_a_missing_key_is_unauthenticated(grpcclient: Any, keyed: Server) -> None:
    _, tensor = _tensor("wine")
    failure = _failure(
        lambda: _stub(grpcclient, keyed).ModelInfer(_request(grpcclient, "wine", tensor, raw=True))
    )
    assert failure[0] == grpc.StatusCode.UNAUTHENTICATED and failure[2]["www-authenticate"] == "Bearer"
    _same_as_rest(failure, _rest_v2(keyed, "wine", tensor))
    client = grpcclient.InferenceServerClient(keyed.grpc_address)
    given = grpcclient.InferInput("guests", list(tensor.shape), "FP32")
    given.set_data_from_numpy(tensor.astype(np.float32))
    answer = client.infer("wine", [given], headers={"authorization": f"Bearer {PREDICTION_KEY}"})
    assert answer.as_numpy("bottles").shape == (2, 1)


@pytest.mark.parametrize(
    "call",
    ["RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"],
)
def test_a_prediction_key_on_the_repository_is_permission_denied(
    grpcclient: Any, keyed: Server, call: str
) -> None:
    messages = grpcclient.service_pb2
    request = getattr(messages, f"{call}Request")()
    if call != "RepositoryIndex":
        request.model_name = "wine"
    method = getattr(_stub(grpcclient, keyed), call)
    failure = _failure(lambda: method(request, metadata=[("authorization", f"Bearer {PREDICTION_KEY}")]))
    assert failure[0] == grpc.StatusCode.PERMISSION_DENIED
    rest = httpx.post(
        f"{keyed.url}/v2/repository/index", headers={"Authorization": f"Bearer {PREDICTION_KEY}"}, timeout=10
    )
    _same_as_rest(failure, rest)


def test_the_repository_calls_with_an_admin_key(grpcclient: Any, keyed: Server) -> None:
    client = grpcclient.InferenceServerClient(keyed.grpc_address)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    index = client.get_model_repository_index(headers=admin, as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {("wine", "READY"), ("digit", "READY")}
    client.unload_model("wine", headers=admin)
    assert "wine" not in {
        m["name"] for m in client.get_model_repository_index(headers=admin, as_json=True)["models"]
    }
    with pytest.raises(grpcclient.InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata("wine")
    client.load_model("wine", headers=admin)
    assert client.is_model_ready("wine")


@pytest.mark.parametrize("over", ["batch", "message"])
def test_a_request_over_a_limit_is_resource_exhausted(grpcclient: Any, server: Server, over: str) -> None:
    """Rows over NNSERVE_MAX_BATCH_SIZE (our slug), or a message over NNSERVE_MAX_BODY_BYTES
    (refused by grpc before it is read, so grpc's own words); logged either way."""
    rows = 257 if over == "batch" else 30_000  # 30,000 x 10 floats: 1.2 MB over the 1 MiB limit
    tensor = np.zeros((rows, 10), dtype=np.float32)
    request = _request(grpcclient, "wine", tensor, raw=True)
    rid = f"over-the-{over}-limit"
    failure = _failure(
        lambda: _stub(grpcclient, server).ModelInfer(request, metadata=[("x-request-id", rid)])
    )
    assert failure[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _access_line(server, rid)["status"] == "RESOURCE_EXHAUSTED"
    if over == "batch":
        _same_as_rest(failure, _rest_v2(server, "wine", tensor))


def test_the_servers_deadline_is_deadline_exceeded(grpcclient: Any, slow: Server) -> None:
    _, tensor = _tensor("wine")
    failure = _failure(
        lambda: _stub(grpcclient, slow).ModelInfer(_request(grpcclient, "wine", tensor, raw=True))
    )
    assert failure[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    _same_as_rest(failure, _rest_v2(slow, "wine", tensor))


def test_a_busy_server_is_unavailable(grpcclient: Any, slow: Server) -> None:
    """Past NNSERVE_MAX_IN_FLIGHT, one budget over both protocols, inference is shed at once with
    the time to retry after: here a REST request holds the one place."""
    _, tensor = _tensor("wine")
    request = _request(grpcclient, "wine", tensor, raw=True)
    first = threading.Thread(target=lambda: _rest_v2(slow, "wine", tensor))
    first.start()
    slow.wait_until_inferring()
    try:
        code, details, trailer = _failure(lambda: _stub(grpcclient, slow).ModelInfer(request))
    finally:
        first.join()
    assert code == grpc.StatusCode.UNAVAILABLE
    assert trailer["error-code"] == "overloaded" and trailer["retry-after"] == "1" and "retry" in details


def test_calls_are_logged_and_counted_with_the_request_id(grpcclient: Any, server: Server) -> None:
    request = _request(grpcclient, "wine", np.zeros((1, 10), dtype=np.float32), raw=True)
    _, call = _stub(grpcclient, server).ModelInfer.with_call(
        request, metadata=[("x-request-id", "grpc-call-1")]
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-call-1"
    log = server.wait_for_log("grpc-call-1")
    [line] = [json.loads(line) for line in log.splitlines() if "grpc-call-1" in line]
    assert (line["protocol"], line["path"], line["status"]) == ("grpc", f"/{SERVICE}/ModelInfer", "OK")
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert (
        f'nnserve_requests_total{{endpoint="/{SERVICE}/ModelInfer",protocol="grpc",status="OK"}}' in metrics
    )


def test_the_health_service_and_reflection(server: Server) -> None:
    channel = grpc.insecure_channel(server.grpc_address)
    health: Any = health_pb2_grpc.HealthStub(channel)  # typed without its calls
    for name in ("", SERVICE):
        answer = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {service.name for service in answer.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_a_draining_server_is_not_serving_and_still_answers(
    start_server: StartServer, grpcclient: Any
) -> None:
    """SIGTERM starts the drain: health turns NOT_SERVING (probes and balancers turn away) while
    calls are still answered, until the drain ends and the server exits."""
    server = start_server(NNSERVE_DRAIN_SECONDS="3")
    health: Any = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_address))
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest()).status == serving
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while health.Check(health_pb2.HealthCheckRequest()).status == serving:
        assert time.monotonic() < deadline, "still SERVING 2 s after SIGTERM"
        time.sleep(0.05)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    assert not client.is_server_ready()
    given = grpcclient.InferInput("guests", [1, 10], "FP32")
    given.set_data_from_numpy(np.zeros((1, 10), dtype=np.float32))
    assert client.infer("wine", [given]).as_numpy("bottles").shape == (1, 1)
    assert server.process.wait(15) == 0


def test_the_grpc_port_closes_when_the_drain_ends(start_server: StartServer, slow_models: SlowModels) -> None:
    """As REST's socket: after NNSERVE_DRAIN_SECONDS no new call is taken, even while a REST
    request still in flight keeps the process alive; then the process exits 0."""
    server = start_server(NNSERVE_DRAIN_SECONDS="0.5", NNSERVE_MODELS_DIR=str(slow_models(2500)))
    live: Any = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_address))
    assert live.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    slow = threading.Thread(target=lambda: httpx.post(f"{server.url}/predict/wine", json=PARTY, timeout=30))
    slow.start()
    server.wait_until_inferring()
    server.process.send_signal(signal.SIGTERM)
    give_up = time.monotonic() + 10
    while True:  # a new channel each time: the port closes when the drain ends
        fresh: Any = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_address))
        try:
            fresh.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            break
        assert time.monotonic() < give_up, "the gRPC port still answers 10 s after SIGTERM"
        time.sleep(0.05)
    assert server.process.poll() is None, "the REST request in flight holds the process"
    slow.join()
    assert server.process.wait(15) == 0

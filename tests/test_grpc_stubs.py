"""The gRPC protocol file is the one Triton's and KServe's clients speak, and the committed stubs
are what it generates. Checked without importing the service's stubs into this process:
tritonclient.grpc defines the same message names in protobuf's default pool (service/grpc/
__init__.py), so the .proto is compiled here into a pool of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor

from support.server import REPO
from support.tools import require_module

PROTO = "service/grpc/inference.proto"
STUBS = ["inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"]
CALLS = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
]


def _protoc(*arguments: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", *arguments, PROTO],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Any:  # protobuf leaves the pool untyped
    """service/grpc/inference.proto, compiled into a pool of its own."""
    out = tmp_path_factory.mktemp("descriptors") / "inference.pb"
    _protoc(f"--descriptor_set_out={out}")
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool: Any = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


@pytest.fixture(scope="module")
def triton() -> Any:  # tritonclient ships no type information
    return require_module("tritonclient.grpc.service_pb2")


def test_the_committed_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    require_module("grpc_tools")
    _protoc(f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}")
    for name in STUBS:
        generated = (tmp_path / "service" / "grpc" / name).read_text()
        committed = (REPO / "service" / "grpc" / name).read_text()
        assert generated == committed, f"service/grpc/{name} is stale: run `make grpc-stubs`"


def _fields(message: Descriptor) -> dict[int, tuple[str, int, bool, str]]:
    """Field number -> (name, wire type, repeated, the type's full name for messages), nested
    messages included: what decides whether two definitions read each other's bytes."""
    return {
        field.number: (
            field.name,
            field.type,
            field.is_repeated,
            field.message_type.full_name if field.message_type else "",
        )
        for field in message.fields
    }


def _messages(message: Descriptor) -> list[Descriptor]:
    return [message, *(nested for child in message.nested_types for nested in _messages(child))]


def test_every_call_and_message_matches_tritons(ours: Any, triton: Any) -> None:
    service = ours.FindServiceByName("inference.GRPCInferenceService")
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert [method.name for method in service.methods] == CALLS
    compared = 0
    for method in service.methods:
        other = theirs.methods_by_name[method.name]
        for mine, their in ((method.input_type, other.input_type), (method.output_type, other.output_type)):
            assert mine.full_name == their.full_name
            for nested in _messages(mine):
                counterpart = triton.DESCRIPTOR.pool.FindMessageTypeByName(nested.full_name)
                assert _fields(nested) == _fields(counterpart), nested.full_name
                compared += 1
    assert compared > 2 * len(CALLS)


def _message_class(pool: Any, name: str) -> Any:
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def test_a_request_and_a_response_cross_from_one_definition_to_the_other(ours: Any, triton: Any) -> None:
    request = triton.ModelInferRequest(model_name="digit", model_version="2", id="x")
    request.parameters["priority"].int64_param = 3
    tensor = request.inputs.add(name="image", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([0.5, 1.5])
    request.inputs.add(name="other", datatype="INT64", shape=[1]).parameters["k"].string_param = "v"
    request.outputs.add(name="probabilities").parameters["binary_data"].bool_param = True
    request.raw_input_contents.append(b"\x00\x01")
    parsed = _message_class(ours, "inference.ModelInferRequest").FromString(request.SerializeToString())
    assert parsed.inputs[0].contents.fp32_contents == [0.5, 1.5]
    assert parsed.parameters["priority"].int64_param == 3
    assert parsed.SerializeToString(deterministic=True) == request.SerializeToString(deterministic=True)

    response = _message_class(ours, "inference.ModelInferResponse")(
        model_name="digit", model_version="2", id="x"
    )
    response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 10])
    response.raw_output_contents.append(bytes(40))
    answer = triton.ModelInferResponse.FromString(response.SerializeToString())
    assert list(answer.outputs[0].shape) == [1, 10] and answer.raw_output_contents[0] == bytes(40)

"""ModelInfer messages to and from the V2 codec's tensors, with REST V2's checks (datatypes,
shapes, value ranges, the batch limit, outputs) reused from service/v2/codec.py.

Raw inputs (`raw_input_contents`) are read in place with np.frombuffer, like the binary tensor
data extension; a raw request is answered in `raw_output_contents`, which is the only form
tritonclient.grpc's `as_numpy` reads, and a typed one in typed contents.
"""

from __future__ import annotations

import numpy as np

from service.errors import BadRequest
from service.grpc import inference_pb2 as pb
from service.v2.codec import (
    InferRequest,
    add_input,
    binary_tensor,
    little_endian,
    selected_outputs,
    tensor_header,
    values_tensor,
)

# The InferTensorContents field that carries each datatype (FP16 has none: it travels raw).
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_request(message: pb.ModelInferRequest, max_rows: int) -> InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(f"raw_input_contents holds {len(raw)} tensors for {len(message.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for index, tensor in enumerate(message.inputs):
        try:
            _add_tensor(inputs, datatypes, tensor, raw[index] if raw else None, max_rows)
        except ValueError as exc:  # numpy's refusal of what the message describes (72 dimensions)
            raise BadRequest(f"input {tensor.name[:100]!r}: {exc}") from None
    return InferRequest(
        id=message.id or None,
        inputs=inputs,
        datatypes=datatypes,
        outputs=[(output.name, bool(raw)) for output in message.outputs] or None,
        binary_output_default=bool(raw),
    )


def _add_tensor(
    inputs: dict[str, np.ndarray],
    datatypes: dict[str, str],
    tensor: pb.ModelInferRequest.InferInputTensor,
    blob: bytes | None,
    max_rows: int,
) -> None:
    name, datatype = tensor.name, tensor.datatype
    dtype, shape, size = tensor_header(name, datatype, list(tensor.shape), max_rows)
    if blob is not None:
        if datatype == "BYTES" or len(blob) != size * dtype.itemsize:
            raise BadRequest(f"input {name!r}: {len(blob)} raw bytes do not fit {datatype} {shape}")
        flat = binary_tensor(blob, dtype, size, name)
    else:
        field = CONTENTS.get(datatype)
        if field is None:
            raise BadRequest(f"input {name!r}: {datatype} data is sent in raw_input_contents")
        flat = values_tensor(list(getattr(tensor.contents, field)), dtype, name, datatype)
    add_input(inputs, datatypes, name, datatype, flat, shape)


def encode_response(
    model_name: str, version: int, request: InferRequest, outputs: dict[str, tuple[np.ndarray, str]]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model_name, model_version=str(version), id=request.id or "")
    for name, array, datatype, raw in selected_outputs(request, outputs):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(bytes(little_endian(array)))
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    return response

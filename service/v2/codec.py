"""Open Inference Protocol (KServe V2) tensors: JSON and the binary tensor data extension.

Binary inputs go straight from the request bytes into numpy with np.frombuffer, at their offset
in the body (no slice of it is copied), so a 784-float digit costs no Python float objects at
all; the JSON header is parsed once, from a view of the body; binary outputs are written from
each array's own buffer into the one response body. That is the protocol's fast path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.card import TensorSpec
from service.errors import BadRequest, BatchTooLarge, quoted

HEADER_LENGTH = "inference-header-content-length"
# What numpy can hold, checked before numpy is asked (it raises on more, which would be a 500): an
# ndarray has at most 64 axes, and its bytes, counting a zero-sized axis as one, fit an int64.
MAX_DIMENSIONS = 64
_MAX_ARRAY_BYTES = 2**63 - 1

# V2 datatype name -> little-endian numpy dtype. BYTES is parsed but no model here takes it.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
CARD_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[tuple[str, bool]] | None  # requested (name, binary) pairs; None = all
    binary_output_default: bool = False


def _object(value: object, what: str) -> dict[str, Any]:
    """An optional JSON object field (`parameters`): absent is empty, anything else is a 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def _shape(value: object, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"input {quoted(name)}: shape must be a list of non-negative integers")
    return value


def _bytes_tensor(data: object, name: str) -> np.ndarray:
    flat = np.asarray(data, dtype=object).ravel()
    if not all(isinstance(item, str | bytes) for item in flat):
        raise BadRequest(f"input {quoted(name)}: BYTES data must be strings")
    return flat


def tensor_header(
    name: str, datatype: object, shape: object, max_rows: int
) -> tuple[np.dtype[Any], list[int], int]:
    """A tensor's datatype checked to be known and its shape to be sizes within the batch limit:
    its numpy dtype, shape and number of values. Every protocol describes a tensor so."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(f"input {quoted(name)}: unknown datatype {quoted(datatype)}")
    checked = _shape(shape, name)
    if len(checked) > MAX_DIMENSIONS:
        raise BadRequest(
            f"input {quoted(name)}: {len(checked)} dimensions; a tensor has at most {MAX_DIMENSIONS}"
        )
    if math.prod(max(d, 1) for d in checked) * DATATYPES[datatype].itemsize > _MAX_ARRAY_BYTES:
        raise BadRequest(f"input {quoted(name)}: shape {checked} is larger than any tensor can be")
    if checked and checked[0] > max_rows:
        raise BatchTooLarge(f"input {quoted(name)}: {checked[0]} rows is over the limit of {max_rows}")
    return DATATYPES[datatype], checked, math.prod(checked)


def binary_tensor(buffer: bytes, dtype: np.dtype[Any], size: int, name: str, offset: int = 0) -> np.ndarray:
    """`size` little-endian values read in place from `buffer`, floats checked to be finite."""
    flat = np.frombuffer(buffer, dtype=dtype, count=size, offset=offset)
    if dtype.kind == "f" and not np.isfinite(flat).all():
        raise BadRequest(f"input {quoted(name)}: binary data holds values that are not finite numbers")
    return flat


def add_input(
    inputs: dict[str, np.ndarray],
    datatypes: dict[str, str],
    name: str,
    datatype: str,
    flat: np.ndarray,
    shape: list[int],
) -> None:
    """A decoded tensor added to a request's inputs, once, if its values fill its shape."""
    size = math.prod(shape)
    if flat.size != size:
        raise BadRequest(f"input {quoted(name)}: shape {shape} needs {size} values, got {flat.size}")
    if name in inputs:
        raise BadRequest(f"input {quoted(name)} is given twice")
    inputs[name] = flat.reshape(shape)
    datatypes[name] = datatype


def values_tensor(data: object, dtype: np.dtype[Any], name: str, datatype: str) -> np.ndarray:
    """Row-major data, nested or flat, checked to be numbers of the declared kind (numpy would
    otherwise turn "1.5" or true into a number without complaint) that the datatype can hold
    (numpy would turn 1e300 into an FP32 inf, and 2**63 into a negative INT64)."""
    if datatype == "BYTES":
        return _bytes_tensor(data, name)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {quoted(name)}: data is not a regular array of numbers") from exc
    kind_ok = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[dtype.kind]
    if array.size and array.dtype.kind not in kind_ok:
        raise BadRequest(f"input {quoted(name)}: data does not hold {datatype} values")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is what `fits` looks for
        converted = array.astype(dtype)
    fits = np.isfinite(converted).all() if dtype.kind == "f" else (converted == array).all()
    if not fits:
        raise BadRequest(f"input {quoted(name)}: data holds values out of the {datatype} range")
    return converted.ravel()


def parse_request(body: bytes, header_length: str | None, max_rows: int) -> InferRequest:
    start = len(body)  # where the binary tensors begin: after the JSON header, if there is one
    if header_length is not None:
        digits = header_length.isascii() and header_length.isdigit() and len(header_length) <= 15
        if not digits or int(header_length) > len(body):
            raise BadRequest("Inference-Header-Content-Length does not fit the body")
        start = int(header_length)
    try:
        document = orjson.loads(memoryview(body)[:start])
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise BadRequest("the inference request needs an `inputs` list")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = start
    for tensor in document["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise BadRequest("each input needs a `name`")
        name = tensor["name"]
        datatype = tensor.get("datatype")
        dtype, shape, size = tensor_header(name, datatype, tensor.get("shape"), max_rows)
        parameters = _object(tensor.get("parameters"), f"input {quoted(name)}: parameters")
        if "binary_data_size" in parameters:
            length = parameters["binary_data_size"]
            if datatype == "BYTES" or not isinstance(length, int) or length != size * dtype.itemsize:
                raise BadRequest(
                    f"input {quoted(name)}: binary_data_size {length} does not fit shape {shape}"
                )
            if offset + length > len(body):
                raise BadRequest(f"input {quoted(name)}: the body holds fewer binary bytes than declared")
            flat = binary_tensor(body, dtype, size, name, offset)
            offset += length
        elif "data" in tensor:
            flat = values_tensor(tensor["data"], dtype, name, str(datatype))
        else:
            raise BadRequest(f"input {quoted(name)} has neither data nor binary_data_size")
        add_input(inputs, datatypes, name, str(datatype), flat, shape)
    if offset != len(body):
        raise BadRequest("the body holds more binary bytes than the inputs declare")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("`id` must be a string")
    binary_default = bool(_object(document.get("parameters"), "parameters").get("binary_data_output"))
    return InferRequest(
        id=request_id,
        inputs=inputs,
        datatypes=datatypes,
        outputs=_requested_outputs(document.get("outputs"), binary_default),
        binary_output_default=binary_default,
    )


def _requested_outputs(outputs: object, binary_default: bool) -> list[tuple[str, bool]] | None:
    """(name, binary) per requested output: an output's own `binary_data` wins over the request's
    `binary_data_output`, as in Triton."""
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("`outputs` must be a list of {name, parameters}")
    return [
        (
            o["name"],
            bool(
                _object(o.get("parameters"), f"output {quoted(o['name'])}: parameters").get(
                    "binary_data", binary_default
                )
            ),
        )
        for o in outputs
    ]


def feeds_for(request: InferRequest, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The request's tensors checked against the model's inputs: names, datatypes, shapes."""
    expected = {spec.name: spec for spec in specs}
    unknown = set(request.inputs) - set(expected)
    if unknown:
        shown = ", ".join(quoted(name) for name in sorted(unknown)[:3])
        raise BadRequest(f"unknown input(s) [{shown}]; the model takes {sorted(expected)}")
    feeds = {}
    for name, spec in expected.items():
        if name not in request.inputs:
            raise BadRequest(f"missing input {quoted(name)}")
        want = CARD_DATATYPES[spec.dtype]
        if request.datatypes[name] != want:
            raise BadRequest(f"input {quoted(name)} must be {want}, not {request.datatypes[name]}")
        tensor = request.inputs[name]
        if len(tensor.shape) != len(spec.shape) or any(
            d != s for d, s in zip(tensor.shape, spec.shape, strict=True) if s != -1
        ):
            raise BadRequest(
                f"input {quoted(name)} has shape {list(tensor.shape)}; the model takes {spec.shape}"
            )
        if tensor.shape[0] == 0:
            raise BadRequest(f"input {quoted(name)} has no rows")
        feeds[name] = np.ascontiguousarray(tensor)
    return feeds


def selected_outputs(
    request: InferRequest, outputs: dict[str, tuple[np.ndarray, str]]
) -> list[tuple[str, np.ndarray, str, bool]]:
    """(name, array, datatype, binary) of each output the request asks for, in its order; all of
    the model's without a list."""
    if request.outputs is None:
        selected = [(name, request.binary_output_default) for name in outputs]
    else:
        selected = request.outputs
    unknown = [name for name, _ in selected if name not in outputs]
    if unknown:
        raise BadRequest(f"unknown output {quoted(unknown[0])}; the model gives {sorted(outputs)}")
    return [(name, *outputs[name], binary) for name, binary in selected]


def little_endian(array: np.ndarray) -> memoryview:
    """The array's bytes, little-endian, without a copy when they already are."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).data.cast("B")


def encode_response(
    model_name: str,
    version: int,
    request: InferRequest,
    outputs: dict[str, tuple[np.ndarray, str]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length if any output is binary."""
    described = []
    blobs: list[memoryview] = []
    for name, array, datatype, binary in selected_outputs(request, outputs):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = little_endian(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        described.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": str(version), "outputs": described}
    if request.id is not None:
        document["id"] = request.id
    header = orjson.dumps(document)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)

"""Static int8 quantisation of an exported graph (onnxruntime.quantization), calibrated on
training inputs, and onnxruntime as a predictor, so that a recipe evaluates the graph it serves.

The digit CNN's batch-1 call is most of a digit request's model time; in int8 its convolutions
and dense layer read a quarter of the bytes and use the CPU's integer dot products. The first
convolution stays in float: with one input channel, onnxruntime's int8 convolution costs more
than its float one (measured: python -m bench.stages). So do the last layer and the softmax, whose
probabilities the service returns: in uint8 the unlikely digits would tie on a few steps of 1/255
and the runner-up would be picked by the tie, not by the net.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from service.card import GraphSession
from service.models.loading import open_session

CALIBRATION_BATCH = 64


# onnxruntime's QDQ propagation moves the quantisation of the float first convolution's output
# ahead of the max pool after it, and the pool then runs in uint8 on a slow NCHW path; left out,
# the pool runs in float beside the convolution, and the graph computes the same (a max commutes
# with a monotone quantisation). Measured by `python -m bench.stages` (digit v3: 62 -> 41 us a call).
UNPROPAGATED = GraphSession(disabled_optimizers=["QDQPropagationTransformer"])


class OnnxPredictor:
    """A graph's first output for a stack of inputs, as training.fit.predict gives a net's, from a
    session opened as the service opens it."""

    def __init__(
        self, graph: bytes, input_name: str, batch_size: int = 1024, opened: GraphSession | None = None
    ) -> None:
        self.session = open_session(graph, 0, (opened or GraphSession()).disabled_optimizers)
        self.input_name = input_name
        self.batch_size = batch_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                self.session.run(None, {self.input_name: x[start : start + self.batch_size]})[0]
                for start in range(0, len(x), self.batch_size)
            ]
        )


class _Batches(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, input_name: str, calibration: np.ndarray) -> None:
        self.batches = iter(
            [
                {input_name: calibration[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(calibration), CALIBRATION_BATCH)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantise(
    float_graph: Path, input_name: str, calibration: np.ndarray
) -> tuple[bytes, dict[str, Any], GraphSession]:
    """The int8 graph of `float_graph` (bytes), the card's account of it and how to open it:
    weights int8 per output channel, activations uint8 with ranges from `calibration` (MinMax:
    the ranges the training inputs reach, so no served digit of their kind is clipped), the first
    convolution kept in float. Deterministic: the same graph and calibration give the same bytes."""
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantised = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(float_graph), str(prepared))
        nodes = onnx.load(prepared).graph.node
        first_conv = next(node.name for node in nodes if node.op_type == "Conv")
        # Uint8 logits or probabilities come in 256 steps: the unlikely digits tie and the
        # smallest probabilities vanish. The layer giving the logits and the softmax stay float.
        softmax = [node for node in nodes if node.op_type == "Softmax"]
        logits = [node.name for node in nodes if set(node.output) & {s.input[0] for s in softmax}]
        quantize_static(
            str(prepared),
            str(quantised),
            _Batches(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[first_conv, *logits, *(node.name for node in softmax)],
        )
        onnx.checker.check_model(str(quantised))
        graph = quantised.read_bytes()
    opened = _unpropagated_if_same(graph, input_name, calibration)
    return (
        graph,
        {
            "format": "static int8 (onnxruntime.quantization, QDQ): weights int8 per output channel, "
            "activations uint8, ranges calibrated by MinMax",
            "calibration_items": len(calibration),
            "kept_in_float": "the first convolution (one input channel: slower in int8), the layer giving "
            "the logits and the softmax (in uint8 the unlikely digits' probabilities would tie)",
            "session": "opened without onnxruntime's QDQ propagation (faster, the same outputs on the "
            "calibration inputs)"
            if opened == UNPROPAGATED
            else "opened as onnxruntime's defaults have it (without QDQ propagation the outputs differed)",
        },
        opened,
    )


def _unpropagated_if_same(graph: bytes, input_name: str, calibration: np.ndarray) -> GraphSession:
    """UNPROPAGATED if the graph gives the same outputs, bit for bit, with and without it."""
    default, unpropagated = (
        OnnxPredictor(graph, input_name, opened=opened)(calibration)
        for opened in (GraphSession(), UNPROPAGATED)
    )
    return UNPROPAGATED if np.array_equal(default, unpropagated) else GraphSession()


def agreement(quantised: np.ndarray, float_outputs: np.ndarray) -> dict[str, Any]:
    """How far the int8 graph's outputs are from the float graph's on the same inputs."""
    return {
        "items": len(quantised),
        "argmax_agreement": float((quantised.argmax(1) == float_outputs.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(quantised - float_outputs).max()),
    }

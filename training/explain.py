"""The wine network's hidden layer as a graph of its own, and what each hidden unit means.

`hidden.onnx` is cut out of the exported `model.onnx` with onnx's own extractor (so its weights
are the served ones, never a second export), checked against a reference on every possible party,
and each unit is named once: the guests whose presence turns it on or off the most, and its weight
into the output. The service reads both (service/models/hidden.py) and never imports onnx.

Two ways in: training/export.py calls the writer that `torch_hidden_graph` returns, checking
against PyTorch; for a version already committed, `python -m training.explain wine 1` derives
them from its model.onnx and checks against numpy evaluating model.onnx's own initializers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import torch
from onnx import numpy_helper

from service.card import MODEL_FILE, GuestRoster, ModelCard
from service.models.hidden import HIDDEN_FILE, HIDDEN_OUTPUT, SECTION, HiddenUnit, HiddenUnits
from training.export import PARITY_TOLERANCE

Reference = Callable[[np.ndarray], np.ndarray]
MAX_ENUMERATED_GUESTS = 16  # 65,536 parties: every possible party stays cheap to run
NAMED_SHARE = 0.5  # a guest names a unit when its effect is at least this share of the largest
MAX_NAMED = 3
METHOD = (
    "each unit's mean activation over every possible party with a guest present, minus without; "
    f"the guests with at least {NAMED_SHARE:g} of the largest such difference (up to {MAX_NAMED}) "
    "name it: 'on when' for a rise, 'off when' for a fall; weight_out is its weight into the output"
)
_PASS_THROUGH = ("Relu", "Identity")


@dataclass(frozen=True)
class OutputLayer:
    """The last affine layer of the network: the hidden tensor feeding it, its weights and bias."""

    hidden: str
    weight: np.ndarray
    bias: float


def all_parties(guests: int) -> np.ndarray:
    """Every guest list as presence vectors: 2**guests rows."""
    if guests > MAX_ENUMERATED_GUESTS:
        raise ValueError(f"{guests} guests make too many parties to enumerate")
    rows = np.arange(2**guests)[:, np.newaxis]
    return ((rows >> np.arange(guests)) & 1).astype(np.float32)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _gemm(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A Gemm's effective (weight as [outputs, inputs], bias), alpha and beta applied."""
    attrs = _attributes(node)
    if attrs.get("transA", 0):
        raise ValueError(f"Gemm {node.name!r} transposes its input: not a plain dense layer")
    weight = weights[node.input[1]]
    weight = weight if attrs.get("transB", 0) else weight.T
    bias = weights[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
    return attrs.get("alpha", 1.0) * weight, attrs.get("beta", 1.0) * bias


def output_layer(model: onnx.ModelProto) -> OutputLayer:
    """Walks back from the single output through activations to the dense layer that makes it."""
    producers = {out: node for node in model.graph.node for out in node.output}
    if len(model.graph.output) != 1:
        raise ValueError("expected a network with one output")
    node = producers[model.graph.output[0].name]
    while node.op_type in _PASS_THROUGH:
        node = producers[node.input[0]]
    if node.op_type != "Gemm":
        raise ValueError(f"the output comes from {node.op_type}, not a dense layer (Gemm)")
    weight, bias = _gemm(node, _initializers(model))
    if weight.shape[0] != 1:
        raise ValueError(f"expected one output unit, got {weight.shape[0]}")
    return OutputLayer(hidden=node.input[0], weight=weight[0], bias=float(bias[0]))


def cut_hidden_graph(model: onnx.ModelProto, hidden: str) -> onnx.ModelProto:
    """The subgraph from the input to `hidden`, its output renamed to HIDDEN_OUTPUT."""
    graph_input = model.graph.input[0].name
    cut = onnx.utils.Extractor(model).extract_model([graph_input], [hidden])
    for node in cut.graph.node:
        node.output[:] = [HIDDEN_OUTPUT if name == hidden else name for name in node.output]
    for info in [*cut.graph.output, *cut.graph.value_info]:
        if info.name == hidden:
            info.name = HIDDEN_OUTPUT
    onnx.checker.check_model(cut, full_check=True)
    return cut


def numpy_reference(model: onnx.ModelProto, hidden: str) -> Reference:
    """model.onnx evaluated by numpy, node by node, up to `hidden`: an implementation that
    shares nothing with onnxruntime but the initializers. Dense layers and ReLU only."""
    weights = _initializers(model)
    graph_input = model.graph.input[0].name

    def run(x: np.ndarray) -> np.ndarray:
        values = {graph_input: x}
        for node in model.graph.node:
            if node.op_type == "Gemm":
                weight, bias = _gemm(node, weights)
                values[node.output[0]] = values[node.input[0]] @ weight.T + bias
            elif node.op_type in _PASS_THROUGH:
                source = values[node.input[0]]
                values[node.output[0]] = np.maximum(source, 0) if node.op_type == "Relu" else source
            else:
                raise ValueError(f"numpy reference knows Gemm, Relu and Identity, not {node.op_type}")
            if hidden in values:
                return values[hidden]
        raise ValueError(f"the graph never computes {hidden!r}")

    return run


def torch_reference(hidden_layer: torch.nn.Module) -> Reference:
    def run(x: np.ndarray) -> np.ndarray:
        hidden_layer.eval()
        with torch.no_grad():
            output: np.ndarray = hidden_layer(torch.from_numpy(x)).numpy()
            return output

    return run


def _names(guests: list[str]) -> str:
    return guests[0] if len(guests) == 1 else f"{', '.join(guests[:-1])} or {guests[-1]}"


def name_unit(
    unit: int, activation: np.ndarray, parties: np.ndarray, roster: list[str], weight_out: float
) -> HiddenUnit:
    """One unit's meaning from its activation on every party (see METHOD)."""
    present = parties.astype(bool)
    effects = np.array(
        [activation[present[:, g]].mean() - activation[~present[:, g]].mean() for g in range(len(roster))]
    )
    largest = float(np.abs(effects).max())
    order = np.argsort(-np.abs(effects), kind="stable")[:MAX_NAMED]
    named = [g for g in order if largest > 1e-6 and abs(effects[g]) >= NAMED_SHARE * largest]
    on_when = [roster[g] for g in named if effects[g] > 0]
    off_when = [roster[g] for g in named if effects[g] < 0]
    share = float((activation > 0).mean())
    if named:
        who = [f"on when {_names(on_when)} comes"] if on_when else []
        who += [f"off when {_names(off_when)} comes"] if off_when else []
        role = ", ".join(who)
    else:
        role = "never on" if share == 0 else "the same whoever comes"
    verb = "adds" if weight_out >= 0 else "takes away"
    return HiddenUnit(
        unit=unit,
        meaning=f"{role}; {verb} {abs(weight_out):.2f} bottles per unit",
        on_when=on_when,
        off_when=off_when,
        weight_out=weight_out,
        active_share=share,
    )


def write_hidden_graph(folder: Path, roster: list[str], reference: Reference, against: str) -> HiddenUnits:
    """Cuts folder/hidden.onnx out of folder/model.onnx, checks it against `reference` on every
    possible party (raises past the export tolerance), and names each unit."""
    model = onnx.load(str(folder / MODEL_FILE))
    layer = output_layer(model)
    onnx.save(cut_hidden_graph(model, layer.hidden), str(folder / HIDDEN_FILE))
    parties = all_parties(len(roster))
    session = ort.InferenceSession(str(folder / HIDDEN_FILE), providers=["CPUExecutionProvider"])
    activations = session.run([HIDDEN_OUTPUT], {model.graph.input[0].name: parties})[0]
    difference = float(np.abs(activations - reference(parties)).max())
    parity = {
        "items": len(parties),
        "max_abs_diff": difference,
        "tolerance": PARITY_TOLERANCE,
        "against": against,
    }
    if difference > PARITY_TOLERANCE:
        (folder / HIDDEN_FILE).unlink()
        raise RuntimeError(f"{HIDDEN_FILE} does not match {against}: {parity}")
    units = [
        name_unit(j, activations[:, j], parties, roster, float(layer.weight[j]))
        for j in range(activations.shape[1])
    ]
    return HiddenUnits(method=METHOD, parity=parity, output_bias=layer.bias, units=units)


def torch_hidden_graph(hidden_layer: torch.nn.Module, roster: list[str]) -> Callable[[Path], dict[str, Any]]:
    """What export runs on the staged version folder (Trained.derive): hidden.onnx checked against
    PyTorch's own hidden layer, and the card section naming the units."""

    def derive(folder: Path) -> dict[str, Any]:
        units = write_hidden_graph(folder, roster, torch_reference(hidden_layer), "torch")
        return {SECTION: units.model_dump()}

    return derive


def derive_committed(models_dir: Path, name: str, version: int) -> HiddenUnits:
    """hidden.onnx and the card's unit meanings for a version already in the repository."""
    folder = models_dir / name / str(version)
    card = ModelCard.read(folder)
    if not isinstance(card.preprocessing, GuestRoster):
        raise SystemExit(f"{name} v{version} does not take a guest roster: no hidden units to name")
    model = onnx.load(str(folder / MODEL_FILE))
    reference = numpy_reference(model, output_layer(model).hidden)
    units = write_hidden_graph(
        folder, card.preprocessing.roster, reference, "numpy evaluating model.onnx's initializers"
    )
    ModelCard.model_validate(card.model_dump() | {SECTION: units.model_dump()}).write(folder)
    return units


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.explain", description=__doc__)
    parser.add_argument("model", help="a model whose card has a guest roster (wine)")
    parser.add_argument("version", type=int)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    units = derive_committed(args.models_dir, args.model, args.version)
    print(f"wrote {args.models_dir / args.model / str(args.version) / HIDDEN_FILE}; parity {units.parity}")
    for unit in units.units:
        print(f"  unit {unit.unit:2d}: {unit.meaning} (on for {unit.active_share:.0%} of parties)")


if __name__ == "__main__":
    main()

"""ONNX export, the onnxruntime parity check, and the versioned model folder.

A model folder is written whole into a temporary name and renamed into place, so a crash never
leaves a half-written version for the service to trip over, and an existing version is never
overwritten.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from service.card import MODEL_FILE, ModelCard, TensorSpec  # noqa: E402
from training.fit import History  # noqa: E402

PARITY_TOLERANCE = 1e-4
SAMPLES_FILE = "samples.json"


@dataclass
class Trained:
    """Everything a training recipe hands to export: the net, its tensors, its evaluation."""

    name: str
    net: torch.nn.Module
    input: TensorSpec
    output: TensorSpec
    task: str
    preprocessing: Any
    x_test: np.ndarray
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    history: History
    samples: list[dict[str, Any]]
    labels: list[str] | None = None
    confusion: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def next_version(models_dir: Path, name: str) -> int:
    folder = models_dir / name
    versions = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
    return max(versions, default=0) + 1


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, spec: TensorSpec,
                output: TensorSpec) -> None:
    """One self-contained file (no external weights) with a dynamic batch dimension."""
    net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=[spec.name],
        output_names=[output.name],
        dynamic_shapes=({0: batch},),
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    onnx.checker.check_model(str(path))


def onnx_outputs(path: Path, input_name: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x})[0]


def parity(net: torch.nn.Module, path: Path, spec: TensorSpec, x: np.ndarray) -> dict[str, Any]:
    """The whole test split through both: the exported graph must compute what torch does."""
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = onnx_outputs(path, spec.name, x)
    result = {
        "items": int(len(x)),
        "max_abs_diff": float(np.abs(expected - got).max()),
        "tolerance": PARITY_TOLERANCE,
    }
    if got.shape[1] > 1:
        result["argmax_equal"] = bool((expected.argmax(1) == got.argmax(1)).all())
    if result["max_abs_diff"] > PARITY_TOLERANCE or result.get("argmax_equal") is False:
        raise RuntimeError(f"ONNX export does not match torch: {result}")
    return result


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def write_model(trained: Trained, models_dir: Path) -> Path:
    version = next_version(models_dir, trained.name)
    final = models_dir / trained.name / str(version)
    staging = models_dir / trained.name / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    example = torch.from_numpy(trained.x_test[:2])
    export_onnx(trained.net, example, staging / MODEL_FILE, trained.input, trained.output)
    outputs = onnx_outputs(staging / MODEL_FILE, trained.input.name, trained.x_test)
    card = ModelCard(
        name=trained.name,
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        task=trained.task,  # type: ignore[arg-type]
        inputs=[trained.input],
        outputs=[trained.output],
        labels=trained.labels,
        preprocessing=trained.preprocessing,
        metrics=trained.metrics,
        baseline=trained.baseline,
        parity=parity(trained.net, staging / MODEL_FILE, trained.input, trained.x_test),
        data=trained.data,
        training=trained.training | {"seconds": round(trained.history.seconds, 1)},
        libraries=library_versions(),
    )
    card.write(staging)
    _write_samples(staging / SAMPLES_FILE, trained.samples, outputs)
    staging.rename(final)
    _write_readme(models_dir / trained.name, card, trained)
    return final


def _write_samples(path: Path, samples: list[dict[str, Any]], outputs: np.ndarray) -> None:
    """Raw held-out inputs as a client sends them, with the outputs this evaluation computed,
    so a test can prove the service answers the same without the training data at hand."""
    items = [
        {"input": s["input"], "label": s["label"], "output": outputs[s["row"]].tolist()}
        for s in samples
    ]
    note = "held-out inputs as sent to the service, with the training pipeline's ONNX outputs"
    path.write_text(json.dumps({"description": note, "items": items}) + "\n")


def _plot_history(history: History, path: Path, title: str) -> None:
    figure, left = plt.subplots(figsize=(6, 3.5))
    epochs = range(1, len(history.loss) + 1)
    left.plot(epochs, history.loss, color="tab:blue", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, history.held_out, color="tab:orange", label=history.held_out_name)
    right.set_ylabel(f"held-out {history.held_out_name}", color="tab:orange")
    left.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_confusion(confusion: np.ndarray, labels: list[str], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(5, 4.5))
    axes.imshow(np.log1p(confusion), cmap="Blues")
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            axes.text(col, row, str(count), ha="center", va="center", fontsize=7)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("held-out confusion matrix")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _table(values: dict[str, Any]) -> str:
    rows = [
        f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in values.items()
        if not isinstance(value, (dict, list))
    ]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def _write_readme(folder: Path, card: ModelCard, trained: Trained) -> None:
    """The human-readable model card of the newest version, beside its plots."""
    curve = f"training_curve_v{card.version}.png"
    _plot_history(trained.history, folder / curve, f"{card.name} v{card.version}")
    images = [f"![training curve]({curve})"]
    if trained.confusion is not None and trained.labels:
        matrix = f"confusion_matrix_v{card.version}.png"
        _plot_confusion(trained.confusion, trained.labels, folder / matrix)
        images.append(f"![confusion matrix]({matrix})")
    training = {k: v for k, v in card.training.items() if not isinstance(v, dict)}
    lines = [
        f"# Model card: {card.name} (version {card.version})",
        "",
        *trained.notes,
        "",
        f"Task: {card.task}. Input `{card.inputs[0].name}` {card.inputs[0].shape} "
        f"{card.inputs[0].dtype}; output `{card.outputs[0].name}` {card.outputs[0].shape}.",
        f"Data: {card.data['source']} (checksum `{card.data.get('sha512', 'generated')}`).",
        "",
        "## Held-out metrics",
        _table(card.metrics),
        "",
        "## Baseline on the same held-out split",
        _table(card.baseline),
        "",
        "## Training",
        _table(training),
        "",
        f"ONNX parity on {card.parity['items']} held-out items: max |torch - onnxruntime| = "
        f"{card.parity['max_abs_diff']:.2e}.",
        "",
        *images,
        "",
        f"Everything above is also in `{card.version}/card.json`; regenerate with "
        f"`make train MODEL={card.name}`.",
    ]
    (folder / "README.md").write_text("\n".join(lines) + "\n")

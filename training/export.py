"""ONNX export, the onnxruntime parity check, and the versioned model folder.

A model folder is written whole into a temporary name and renamed into place, so a crash never
leaves a half-written version for the service to trip over, and an existing version is never
overwritten.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.card import MODEL_FILE, GraphSession, ModelCard, TensorSpec
from service.features import BagOfWords
from service.features.spam import TextKind
from service.models.loading import open_session
from training.fit import History

PARITY_TOLERANCE = 1e-4
Feeds = dict[str, np.ndarray]
SAMPLES_FILE = "samples.json"


@dataclass(frozen=True)
class Exported:
    """A graph already exported and checked against torch (a committed version's model.onnx),
    for a version derived from it without retraining: its card's parity section comes along."""

    graph: Path
    parity: dict[str, Any]


@dataclass
class Trained:
    """Everything a training recipe hands to export: the net, its tensors, its evaluation."""

    name: str
    net: torch.nn.Module | Exported
    input: TensorSpec | list[TensorSpec]  # several for spam v3 on (token ids and weights)
    output: TensorSpec
    task: str
    preprocessing: Any
    x_test: np.ndarray | list[Feeds]  # the test inputs: one array, or chunks of named tensors
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    history: History
    samples: list[dict[str, Any]]
    labels: list[str] | None = None
    confusion: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    threshold: float | None = None
    thresholds: dict[TextKind, float] | None = None  # per kind of text (spam v3 on)
    # Card sections beyond the held-out metrics, each rendered in the README by its shape:
    # `views` (name -> metrics, one column per view, "confusion" matrices as tables),
    # `known_limits` (plain sentences, a list) and `sections` (title -> a dict of scalars, whose
    # lists of row dicts become tables of their own).
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    known_limits: list[str] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Graphs derived from the exported model.onnx (wine's hidden layer, training/explain.py; the
    # digit's int8 graph, which replaces it): called on the staged version folder once the export
    # is checked against torch, writes its files there and returns card sections.
    derive: Callable[[Path], dict[str, Any]] | None = None
    # The `python -m training` model that makes this version again, when not its name (digit-int8).
    command: str | None = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.input if isinstance(self.input, list) else [self.input]

    def test_feeds(self) -> list[Feeds]:
        """The test inputs as the graph takes them, in chunks (a sparse input's chunks are padded
        each to its own width: one padded block of a whole split would be mostly padding)."""
        if isinstance(self.x_test, list):
            return self.x_test
        return [{self.inputs[0].name: self.x_test}]


def chunked(encoder: BagOfWords, rows: list[np.ndarray], size: int = 128) -> list[Feeds]:
    """Encoded rows as the graph's feeds, `size` rows at a time."""
    return [encoder.feeds(rows[start : start + size]) for start in range(0, len(rows), size)]


def next_version(models_dir: Path, name: str) -> int:
    folder = models_dir / name
    versions = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
    return max(versions, default=0) + 1


def export_onnx(
    net: torch.nn.Module, example: Feeds, path: Path, specs: list[TensorSpec], output: TensorSpec
) -> None:
    """One self-contained file (no external weights) with a dynamic batch dimension, and a dynamic
    second one where the spec has -1 there (token ids: one per word present)."""
    net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    tokens = torch.export.Dim("tokens", min=1, max=1 << 20)
    torch.onnx.export(
        net,
        tuple(torch.from_numpy(example[spec.name]) for spec in specs),
        str(path),
        input_names=[spec.name for spec in specs],
        output_names=[output.name],
        dynamic_shapes=tuple({0: batch} | ({1: tokens} if spec.shape[1:2] == [-1] else {}) for spec in specs),
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    onnx.checker.check_model(str(path))


def onnx_outputs(path: Path, chunks: list[Feeds], opened: GraphSession | None = None) -> np.ndarray:
    """The graph's first output for every chunk of feeds, concatenated, from a session opened as
    the service opens it for a card whose session section is `opened`."""
    session = open_session(str(path), 0, (opened or GraphSession()).disabled_optimizers)
    return np.concatenate([session.run(None, feeds)[0] for feeds in chunks])


def parity(net: torch.nn.Module, path: Path, specs: list[TensorSpec], chunks: list[Feeds]) -> dict[str, Any]:
    """The whole test split through both: the exported graph must compute what torch does."""
    net.eval()
    with torch.no_grad():
        expected = np.concatenate(
            [net(*(torch.from_numpy(feeds[spec.name]) for spec in specs)).numpy() for feeds in chunks]
        )
    got = onnx_outputs(path, chunks)
    result = {
        "items": int(len(got)),
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
    chunks = trained.test_feeds()
    example = {name: tensor[:2] for name, tensor in chunks[0].items()}
    if isinstance(trained.net, Exported):
        shutil.copyfile(trained.net.graph, staging / MODEL_FILE)
        exported = trained.net.parity
    else:
        export_onnx(trained.net, example, staging / MODEL_FILE, trained.inputs, trained.output)
        # The export checked against torch before `derive`, which may replace it (an int8 graph).
        exported = parity(trained.net, staging / MODEL_FILE, trained.inputs, chunks)
    derived = trained.derive(staging) if trained.derive is not None else {}
    card = ModelCard(
        name=trained.name,
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        task=trained.task,
        inputs=trained.inputs,
        outputs=[trained.output],
        labels=trained.labels,
        preprocessing=trained.preprocessing,
        metrics=trained.metrics,
        baseline=trained.baseline,
        parity=exported,
        data=trained.data,
        training=trained.training | {"seconds": round(trained.history.seconds, 1)},
        libraries=library_versions(),
        threshold=trained.threshold,
        thresholds=trained.thresholds,
        **({"views": trained.views} if trained.views else {}),
        **({"known_limits": trained.known_limits} if trained.known_limits else {}),
        **trained.sections,
        **derived,
    )
    card.write(staging)
    outputs = onnx_outputs(staging / MODEL_FILE, chunks, card.session)
    _write_samples(staging / SAMPLES_FILE, trained.samples, outputs)
    staging.rename(final)
    _write_readme(models_dir / trained.name, card, trained)
    return final


def _write_samples(path: Path, samples: list[dict[str, Any]], outputs: np.ndarray) -> None:
    """Raw held-out inputs as a client sends them, with the outputs this evaluation computed,
    so a test can prove the service answers the same without the training data at hand."""
    items = [
        {"input": s["input"], "label": s["label"], "output": outputs[s["row"]].tolist()}
        | ({"kind": s["kind"]} if "kind" in s else {})  # spam v4 on: the kind of text it was judged as
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


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _rows(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Scalars as table rows, nested dicts (the wine story cases) flattened; long lists (the
    held-out files, the vocabulary) stay in card.json."""
    rows = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows += _rows(value, f"{prefix}{key}: ")
        elif not isinstance(value, list):
            rows.append(f"| {prefix}{key} | {_cell(value)} |")
    return rows


def _table(values: dict[str, Any], what: str = "metric") -> str:
    return "\n".join([f"| {what} | value |", "|---|---|", *_rows(values)])


def _grid(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)])


def _records(values: dict[str, Any]) -> list[str]:
    """Each list of row dicts in a section (a reliability table, per-font scores) as a table."""
    blocks = []
    for key, value in values.items():
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            header = list(value[0])
            blocks += [f"{key}:", "", _grid(header, [[row.get(h) for h in header] for row in value]), ""]
    return blocks


def _views(views: dict[str, dict[str, Any]], labels: list[str] | None) -> list[str]:
    """One column per view, so the same metric reads across them; each view's confusion matrix
    (rows true, columns predicted) follows as its own table."""
    scalars = (k for view in views.values() for k, v in view.items() if not isinstance(v, (dict, list)))
    metrics = list(dict.fromkeys(scalars))
    rows = [[metric, *(view.get(metric, "") for view in views.values())] for metric in metrics]
    lines = ["## Views", "", _grid(["metric", *views], rows), ""]
    for name, view in views.items():
        if view.get("confusion") and labels:
            matrix = [[label, *row] for label, row in zip(labels, view["confusion"], strict=True)]
            lines += [
                f"Confusion matrix, {name} (rows true, columns predicted):",
                "",
                _grid(["true \\ predicted", *labels], matrix),
                "",
            ]
    return lines


def _sections(card: ModelCard) -> list[str]:
    """Every extra card section (beyond views and known limits) as its own heading and tables."""
    lines = []
    for key, value in (card.model_extra or {}).items():
        if key not in ("views", "known_limits") and isinstance(value, dict):
            lines += [f"## {key.replace('_', ' ').capitalize()}", _table(value, "item"), "", *_records(value)]
    return lines


def _write_readme(folder: Path, card: ModelCard, trained: Trained) -> None:
    """The human-readable model card of the newest version, beside its plots."""
    images = []
    if trained.history.loss:  # a version derived from a committed graph was not trained itself
        curve = f"training_curve_v{card.version}.png"
        _plot_history(trained.history, folder / curve, f"{card.name} v{card.version}")
        images.append(f"![training curve]({curve})")
    if trained.confusion is not None and trained.labels:
        matrix = f"confusion_matrix_v{card.version}.png"
        _plot_confusion(trained.confusion, trained.labels, folder / matrix)
        images.append(f"![confusion matrix]({matrix})")
    extra = card.model_extra or {}
    threshold = (
        []
        if card.threshold is None or not card.labels
        else [
            f"Decision threshold: `{card.labels[-1]}` when its probability is at least "
            + (
                f"{card.threshold:.4f} (card `threshold`)."
                if card.thresholds is None
                else ", ".join(f"{value:.4f} for {kind}" for kind, value in card.thresholds.items())
                + " (card `thresholds`: an email is a text that came with a header block)."
            ),
            "",
        ]
    )
    limits = ["## Known limits", "", *(f"- {limit}" for limit in extra.get("known_limits", [])), ""]
    lines = [
        f"# Model card: {card.name} (version {card.version})",
        "",
        *trained.notes,
        "",
        f"Task: {card.task}. Input "
        + ", ".join(f"`{spec.name}` {spec.shape} {spec.dtype}" for spec in card.inputs)
        + f"; output `{card.outputs[0].name}` {card.outputs[0].shape}.",
        "",
        *threshold,
        "## Held-out metrics",
        _table(card.metrics),
        "",
        *(_views(extra["views"], card.labels) if "views" in extra else []),
        *(limits if "known_limits" in extra else []),
        *_sections(card),
        "## Baseline on the same held-out split",
        _table(card.baseline),
        "",
        "## Data",
        _table(card.data, "data"),
        "",
        "## Training",
        _table(card.training, "setting"),
        "",
        f"ONNX parity on {card.parity['items']} held-out items: max |torch - onnxruntime| = "
        f"{card.parity['max_abs_diff']:.2e}.",
        "",
        *images,
        "",
        f"Everything above is also in `{card.version}/card.json`; regenerate with "
        f"`make train MODEL={trained.command or card.name}`.",
    ]
    (folder / "README.md").write_text("\n".join(lines) + "\n")

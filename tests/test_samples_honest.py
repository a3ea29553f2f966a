"""A reader checks every committed model version against its own held-out outputs
(`held_out.npz`, written by `python -m training.samples`): the card's headline metric is what
those outputs and labels give, the samples the parity tests replay are those outputs, and the
samples include the items the model gets wrong and the ones it is least sure of, not only its
confident right answers. (tests/test_parity.py proves the service answers the samples as the
model did; so the card, the samples and the served model cannot drift apart.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.server import MODELS_DIR

MIN_WRONG = 20  # the samples hold every sendable mistake, or at least this many of them
MIN_UNSURE = 20  # the samples hold the least sure of the right answers, at least this many
VERSIONS = sorted(p for p in MODELS_DIR.glob("*/*") if p.is_dir() and p.name.isdigit())


def _load(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], list[dict[str, Any]]]:
    card = json.loads((folder / "card.json").read_text())
    with np.load(folder / "held_out.npz") as held_out:
        arrays = {name: held_out[name] for name in held_out.files}
    return card, arrays, json.loads((folder / "samples.json").read_text())["items"]


def _thresholds(card: dict[str, Any], held_out: dict[str, np.ndarray]) -> np.ndarray | float:
    """Each item's decision threshold: its kind's (spam v3 on), else the card's one, else 0.5."""
    if "kinds" in held_out:
        return np.array([card["thresholds"][kind] for kind in held_out["kinds"].tolist()])
    return float(card.get("threshold") or 0.5)


def _judged(card: dict[str, Any], held_out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Whether each answer is right, and how sure of it the model is (a regression: minus its error)."""
    outputs, labels = held_out["outputs"], held_out["labels"]
    if card["task"] == "regression":
        error = np.abs(outputs[:, 0] - labels)
        return np.ones(len(labels), dtype=bool), -error
    if card["task"] == "binary_classification":
        threshold = _thresholds(card, held_out)
        return (outputs[:, 1] >= threshold) == labels.astype(bool), np.abs(outputs[:, 1] - threshold)
    ranked = np.sort(outputs, axis=1)
    return outputs.argmax(axis=1) == labels, ranked[:, -1] - ranked[:, -2]


def _f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = float((predicted & truth).sum())
    return 2 * tp / (2 * tp + float((predicted != truth).sum()))


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_card_headline_metric_is_what_the_held_out_outputs_give(folder: Path) -> None:
    card, held_out, _ = _load(folder)
    outputs, labels = held_out["outputs"], held_out["labels"]
    metrics = card["metrics"]
    if card["task"] == "regression":
        assert np.abs(outputs[:, 0] - labels).mean() == pytest.approx(metrics["mae"], abs=1e-4)
        return
    right, _ = _judged(card, held_out)
    assert len(labels) == metrics["held_out_count"]
    assert right.mean() == pytest.approx(metrics["accuracy"], abs=1e-9)
    if card["task"] == "binary_classification":
        predicted = outputs[:, 1] >= _thresholds(card, held_out)
        assert _f1(predicted, labels.astype(bool)) == pytest.approx(metrics["f1"], abs=1e-9)


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_samples_are_held_out_items_with_their_outputs(folder: Path) -> None:
    card, held_out, samples = _load(folder)
    assert len(samples) >= 200
    ours = [s for s in samples if "row" in s]
    assert len(ours) >= len(samples) - 40, "most samples are held-out items"
    for sample in ours:
        np.testing.assert_allclose(sample["output"], held_out["outputs"][sample["row"]], atol=1e-5)
        label = held_out["labels"][sample["row"]].item()
        shown = card["labels"][label] if card["task"] == "binary_classification" else label
        assert sample["label"] == pytest.approx(shown, abs=1e-6)


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_samples_include_what_the_model_gets_wrong_or_is_unsure_of(folder: Path) -> None:
    card, held_out, samples = _load(folder)
    right, sureness = _judged(card, held_out)
    sendable = held_out["sendable"]
    sampled = {s["row"] for s in samples if "row" in s}
    wrong = np.flatnonzero(~right & sendable)
    least_sure = [row for row in np.argsort(sureness, kind="stable") if right[row] and sendable[row]][
        :MIN_UNSURE
    ]
    print(
        f"\n{folder.parent.name} v{folder.name}: {len(sampled & set(wrong.tolist()))} of {len(wrong)} "
        f"sendable mistakes sampled; the {MIN_UNSURE} least sure right answers sampled: "
        f"{set(least_sure) <= sampled}"
    )
    assert len(sampled & set(wrong.tolist())) >= min(MIN_WRONG, len(wrong))
    assert set(least_sure) <= sampled, "the answers the model is least sure of are not replayed"


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_version_that_records_kinds_records_every_samples_kind(folder: Path) -> None:
    """From spam v4, samples.json says which kind of text training judged each item as (which
    picked its threshold), so the threshold tests need not trust the service's own judgement."""
    card, held_out, samples = _load(folder)
    kinds = [s.get("kind") for s in samples]
    if any(kinds):
        assert set(kinds) <= {"email", "text"}, set(kinds)
        for sample in samples:
            if "row" in sample and sample.get("why") != "other view":
                assert sample["kind"] == held_out["kinds"][sample["row"]]

"""The committed models meet their targets, as their cards record, and their graphs match."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from conftest import MODELS_DIR
from service.card import ModelCard
from service.registry import _graph_specs


def _latest(name: str) -> tuple[Path, ModelCard]:
    folder = max((p for p in (MODELS_DIR / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return folder, ModelCard.read(folder)


@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_the_graph_matches_the_card_and_parity_held(name: str) -> None:
    folder, card = _latest(name)
    session = ort.InferenceSession(str(folder / "model.onnx"))
    assert _graph_specs(session.get_inputs()) == card.inputs
    assert _graph_specs(session.get_outputs()) == card.outputs
    assert card.parity["max_abs_diff"] <= 1e-4
    assert card.parity.get("argmax_equal", True) is True
    assert card.data["held_out"] and card.training["seed"] == 0
    assert "determinism" in card.training and card.training["seconds"] > 0


def test_digit_targets() -> None:
    _, card = _latest("digit")
    assert card.metrics["accuracy"] >= 0.993
    assert card.baseline["accuracy"] < card.metrics["accuracy"]
    assert len(card.data["held_out"]["indices"]) == card.metrics["held_out_count"] == 2000
    assert card.training["seconds_total"] <= 300


def test_spam_targets() -> None:
    _, card = _latest("spam")
    assert card.metrics["accuracy"] >= 0.99
    assert card.metrics["f1"] >= 0.98
    assert card.metrics["roc_auc"] >= 0.997
    assert 0.0 <= card.metrics["hard_ham_false_positive_rate"] < 0.2
    assert card.metrics["vocabulary_size"] >= 5000
    assert len(card.data["held_out"]["files"]) == card.metrics["held_out_count"]
    assert card.training["seconds_total"] <= 60


def test_wine_targets() -> None:
    _, card = _latest("wine")
    assert card.metrics["mae"] <= 0.1
    assert card.metrics["mae"] * 5 <= card.baseline["mae"]
    assert card.metrics["story_max_error"] <= 0.2
    story = card.metrics["story"]
    assert story["Dahlia + Stiffy"] == pytest.approx(4.3, abs=0.2)
    assert story["Agatha + Dahlia + Stiffy"] == pytest.approx(0.0, abs=0.2)
    assert card.training["seconds_total"] <= 60

"""Each model trains for one epoch on a tiny fixture and exports a valid, served-ready version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from training_fixtures import write_mnist, write_spam

from service.card import ModelCard
from training.export import Trained, write_model
from training.fit import FitConfig
from training.recipes import train_digit, train_spam, train_wine

ONE_EPOCH = FitConfig(epochs=1, learning_rate=0.01, batch_size=32, seed=0)


def _wine(cache: Path) -> Trained:
    return train_wine(ONE_EPOCH, train_parties=300, test_parties=100)


def _spam(cache: Path) -> Trained:
    write_spam(cache)
    return train_spam(ONE_EPOCH, vocabulary_size=50, cache=cache, test_share=0.2)


def _digit(cache: Path) -> Trained:
    write_mnist(cache)
    return train_digit(ONE_EPOCH, ONE_EPOCH, cache=cache, test_size=20)


@pytest.mark.parametrize("recipe", [_wine, _spam, _digit], ids=["wine", "spam", "digit"])
def test_one_epoch_exports_a_model_that_onnxruntime_serves(tmp_path: Path, recipe) -> None:  # type: ignore[no-untyped-def]
    trained = recipe(tmp_path / "cache")
    models = tmp_path / "models"
    folder = write_model(trained, models)
    assert folder == models / trained.name / "1"
    card = ModelCard.read(folder)
    assert card.parity["max_abs_diff"] <= 1e-4 and card.parity.get("argmax_equal", True)
    assert card.training["determinism"]["max_abs_diff"] == 0.0
    session = ort.InferenceSession(str(folder / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [s.name for s in card.inputs]
    outputs = session.run(None, {card.inputs[0].name: trained.x_test[:3]})[0]
    assert outputs.shape[0] == 3
    samples = json.loads((folder / "samples.json").read_text())["items"]
    assert samples and np.allclose(samples[0]["output"], outputs[0], atol=1e-6)
    assert (models / trained.name / "README.md").is_file()
    assert (models / trained.name / "training_curve_v1.png").stat().st_size > 1000
    assert write_model(trained, models) == models / trained.name / "2"  # never overwrites

"""Each model trains for one epoch on a tiny fixture and exports a valid, served-ready version."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from training_fixtures import write_mnist, write_modern_sets, write_shorteners, write_sms, write_spam

from service.card import ModelCard, TokenIdVocabulary
from training import data
from training.__main__ import main
from training.export import Trained, write_model
from training.fit import FitConfig
from training.recipes import train_digit, train_spam, train_wine
from training.recipes.digit import NOISE_FLOOR

ONE_EPOCH = FitConfig(epochs=1, learning_rate=0.01, batch_size=32, seed=0)


def _wine(cache: Path) -> Trained:
    return train_wine(ONE_EPOCH, train_parties=300, test_parties=100)


def _spam(cache: Path) -> Trained:
    write_spam(cache)
    write_sms(cache)
    write_shorteners(cache)
    training, evaluation = write_modern_sets(cache)
    return train_spam(
        ONE_EPOCH,
        vocabulary_size=50,
        cache=cache,
        test_share=0.2,
        training_set=training,
        evaluation_sets=evaluation,
    )


def _digit(cache: Path) -> Trained:
    write_mnist(cache)
    return train_digit(ONE_EPOCH, ONE_EPOCH, cache=cache, test_size=20)


Recipe = Callable[[Path], Trained]
Train = Callable[[Recipe], tuple[Path, Trained]]


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> Train:
    """Each recipe trained once for the module, with the data cache it was trained from: writing a
    version does not change a Trained, and the fast ring has no seconds to train one twice."""
    done: dict[Recipe, tuple[Path, Trained]] = {}

    def trained(recipe: Recipe) -> tuple[Path, Trained]:
        if recipe not in done:
            cache = tmp_path_factory.mktemp(recipe.__name__) / "cache"
            done[recipe] = cache, recipe(cache)
        return done[recipe]

    return trained


# Digit's recipe (a CNN, its int8 graph, every view) takes most of a minute's budget: test-all's.
DIGIT_SLOW = pytest.param(_digit, id="digit", marks=pytest.mark.slow)


@pytest.mark.parametrize("recipe", [_wine, _spam, DIGIT_SLOW], ids=["wine", "spam", "digit"])
def test_one_epoch_exports_a_model_that_onnxruntime_serves(
    tmp_path: Path, train: Train, recipe: Recipe
) -> None:
    _, trained = train(recipe)
    models = tmp_path / "models"
    folder = write_model(trained, models)
    assert folder == models / trained.name / "1"
    card = ModelCard.read(folder)
    assert card.parity["max_abs_diff"] <= 1e-4 and card.parity.get("argmax_equal", True)
    assert card.training["determinism"]["max_abs_diff"] == 0.0
    session = ort.InferenceSession(str(folder / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [s.name for s in card.inputs]
    feeds = {name: tensor[:3] for name, tensor in trained.test_feeds()[0].items()}
    outputs = session.run(None, feeds)[0]
    assert outputs.shape[0] == 3
    samples = json.loads((folder / "samples.json").read_text())["items"]
    assert samples and np.allclose(samples[0]["output"], outputs[0], atol=1e-6)
    assert (models / trained.name / "README.md").is_file()
    assert (models / trained.name / "training_curve_v1.png").stat().st_size > 1000


@pytest.mark.slow  # trains digit's recipe: test-all's
def test_the_digit_version_serves_an_int8_graph_its_card_measures(tmp_path: Path, train: Train) -> None:
    """The digit recipe quantises its CNN (training/quantise.py): the version's model.onnx is
    the int8 graph (weights int8 per channel, the first convolution in float), calibrated on
    training inputs; the card's metric is that graph's, and says how far it is from the float
    graph whose export parity with torch the card's parity section holds."""
    cache, trained = train(_digit)
    folder = write_model(trained, tmp_path / "models")
    _assert_int8_with_first_convolution_in_float(folder)
    card = ModelCard.read(folder)
    quantisation = (card.model_extra or {})["quantisation"]
    assert quantisation["calibration_items"] == trained.data["train_count"] * 3  # the first epoch's inputs
    assert quantisation["held_out"]["items"] == card.metrics["held_out_count"]
    x_test = trained.test_feeds()[0]["image"][: card.metrics["held_out_count"]]
    served = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"image": x_test})[0]
    _, labels = data.load_digits(cache)
    y_test = labels[card.data["held_out"]["indices"]]
    assert card.metrics["accuracy"] == float((served.argmax(1) == y_test).mean())


def _assert_int8_with_first_convolution_in_float(folder: Path) -> None:
    graph = onnx.load(folder / "model.onnx").graph
    weights = {w.name: w for w in graph.initializer}
    convolutions = [n for n in graph.node if n.op_type == "Conv"]
    assert weights[convolutions[0].input[1]].data_type == onnx.TensorProto.FLOAT
    assert all(n.input[1] not in weights for n in convolutions[1:])  # their weights dequantised
    assert sum(w.data_type == onnx.TensorProto.INT8 for w in graph.initializer) >= 4
    # The logits and probabilities in float: in uint8, the unlikely digits tie (the runner-up).
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    assert made_by[softmax.input[0]] == "Gemm" and made_by[graph.output[0].name] == "Softmax"


@pytest.mark.slow  # a whole command-line run: test-all's, not the fast ring's
def test_digit_int8_quantises_the_newest_float_version_without_retraining(
    tmp_path: Path, train: Train
) -> None:
    """`python -m training digit-int8`: the newest float digit version's own graph (v1 here, a
    float export as the committed v1 and v2 are) becomes a new int8 version, its views measured
    on the int8 graph, its card naming the source; a rerun gives the same graph byte for byte."""
    (cache, trained), models = train(_digit), tmp_path / "models"
    source = write_model(replace(trained, derive=None), models)  # the float export kept
    args = ["digit-int8", "--cache", str(cache), "--models-dir", str(models)]
    assert main(args) == [models / "digit" / "2"]
    folder = models / "digit" / "2"
    _assert_int8_with_first_convolution_in_float(folder)
    float_card, card = ModelCard.read(source), ModelCard.read(folder)
    extra = card.model_extra or {}
    assert extra["quantisation"]["source_version"] == 1
    # Its first pool stays in float beside the float convolution (same outputs, faster).
    assert card.session.disabled_optimizers == ["QDQPropagationTransformer"]
    assert extra["quantisation"]["calibration_items"] == float_card.data["train_count"] * 3
    assert card.preprocessing == float_card.preprocessing and card.data == float_card.data
    assert list(extra["views"]) == list((float_card.model_extra or {})["views"])
    images, labels = data.load_digits(cache)
    held_out = card.data["held_out"]["indices"]
    x_test, y_test = data.normalise_digits(images[held_out], NOISE_FLOOR), labels[held_out]
    served, floats = (
        ort.InferenceSession(str(f / "model.onnx")).run(None, {"image": x_test})[0] for f in (folder, source)
    )
    assert card.metrics["accuracy"] == float((served.argmax(1) == y_test).mean())
    assert extra["views"]["clean"]["light_on_dark"] == card.metrics["accuracy"]
    agreement = extra["quantisation"]["held_out"]
    assert agreement["argmax_agreement"] == float((served.argmax(1) == floats.argmax(1)).mean())
    assert agreement["max_abs_diff"] == pytest.approx(float(np.abs(served - floats).max()), abs=1e-6)
    assert (folder / "held_out.npz").is_file() and (folder / "samples.json").is_file()
    assert "make train MODEL=digit-int8" in (models / "digit" / "README.md").read_text()
    assert main(args) == [models / "digit" / "3"]  # v2 is int8: v1 is still the newest float one
    assert (models / "digit" / "3" / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()


@pytest.mark.slow  # a whole command-line run: test-all's, not the fast ring's
def test_the_command_line_trains_a_quick_run_into_new_versions(tmp_path: Path) -> None:
    args = ["wine", "--subset", "300", "--epochs", "1", "--models-dir", str(tmp_path)]
    assert main(args) == [tmp_path / "wine" / "1"]
    assert main(args) == [tmp_path / "wine" / "2"]
    card = ModelCard.read(tmp_path / "wine" / "2")
    assert card.data["train"]["parties"] == 300 and card.training["epochs"] == 1


def test_the_spam_card_states_its_views_threshold_calibration_and_limits(
    tmp_path: Path, train: Train
) -> None:
    folder = write_model(train(_spam)[1], tmp_path / "models")
    card = ModelCard.read(folder)
    extra = card.model_extra or {}
    assert card.threshold is not None and 0.0 < card.threshold < 1.0
    assert list(extra["views"]) == [
        "full email",
        "body only",
        "first 30 words of the body",
        "SMS held-out (SMS Spam Collection)",
        "SMS held-out (Mendeley SMS phishing)",
        "short messages (tests/data/short_messages.json)",
        "short messages (tests/data/everyday_messages.json)",
        "SmishTank (evaluation only)",
        "phishing_pot (evaluation only)",
        "Super SMS 2018-23 (evaluation only)",
    ]
    assert extra["views"]["short messages (tests/data/short_messages.json)"]["items"] == 64
    assert extra["views"]["short messages (tests/data/everyday_messages.json)"]["items"] == 60
    assert extra["calibration"]["temperature"] > 0 and extra["calibration"]["reliability"]
    assert extra["known_limits"]
    validation, held_out = set(card.data["validation"]["files"]), set(card.data["held_out"]["files"])
    assert validation and held_out and not validation & held_out
    sms = card.data["sms"]
    sms_validation, sms_held_out = set(sms["validation"]["lines"]), set(sms["held_out"]["lines"])
    assert sms_validation and sms_held_out and not sms_validation & sms_held_out
    assert "Almeida" in sms["credit"] and "CC BY 4.0" in sms["credit"]
    mendeley = card.data["mendeley"]
    assert "Mishra" in mendeley["credit"] and "CC BY 4.0" in mendeley["credit"]
    assert set(mendeley["held_out"]["lines"]).isdisjoint(mendeley["validation"]["lines"])
    for name, spec in card.data["evaluation_only"].items():
        view = extra["views"][name]
        assert view["licence"] == spec["licence"] and view["era"] and view["source"]
        assert view["items"] == spec["messages"] == 8 and spec["use"].startswith("evaluation only")
    assert isinstance(card.preprocessing, TokenIdVocabulary)
    links = card.preprocessing.links
    assert links is not None and links.shorteners == ["bit.ly", "is.gd"] and "irs" in links.brands
    assert card.preprocessing.kind == "token_ids" and "GTUBE" in card.preprocessing.test_patterns
    readme = (tmp_path / "models" / "spam" / "README.md").read_text()
    for heading in ("## Views", "## Known limits", "## Calibration", "## Decision threshold"):
        assert heading in readme
    assert "Confusion matrix, body only" in readme


def test_training_spam_without_a_modern_set_stops_and_says_what_is_missing_and_where_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    write_spam(cache)
    write_sms(cache)
    write_shorteners(cache)
    monkeypatch.setattr(data, "SHARED_SPAM_DIR", tmp_path / "shared")
    with pytest.raises(SystemExit) as stopped:
        main(["spam", "--cache", str(cache), "--models-dir", str(tmp_path / "models"), "--epochs", "1"])
    message = str(stopped.value)
    assert message.startswith("python -m training spam: ") and "is missing" in message
    assert data.SMISHTANK.file in message or data.MENDELEY.file in message
    assert str(tmp_path / "shared") in message and "Get it from" in message
    assert not (tmp_path / "models" / "spam").exists()

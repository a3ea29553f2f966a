"""The committed models meet their targets, as their cards record, and their graphs match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from service.card import ModelCard, TokenIdVocabulary
from service.models.loading import graph_specs
from training.augment import FOREIGN

from support.server import MODELS_DIR


def _latest(name: str) -> tuple[Path, ModelCard]:
    folder = max((p for p in (MODELS_DIR / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return folder, ModelCard.read(folder)


@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_the_graph_matches_the_card_and_parity_held(name: str) -> None:
    folder, card = _latest(name)
    session = ort.InferenceSession(str(folder / "model.onnx"))
    assert graph_specs(session.get_inputs()) == card.inputs
    assert graph_specs(session.get_outputs()) == card.outputs
    assert card.parity["max_abs_diff"] <= 1e-4
    assert card.parity.get("argmax_equal", True) is True
    assert card.data["held_out"] and card.training["seed"] == 0
    assert "determinism" in card.training and card.training["seconds"] > 0


def _version(name: str, version: int) -> ModelCard:
    return ModelCard.read(MODELS_DIR / name / str(version))


def test_digit_v1_targets() -> None:
    card = _version("digit", 1)
    assert card.metrics["accuracy"] >= 0.993
    assert card.baseline["accuracy"] < card.metrics["accuracy"]
    assert len(card.data["held_out"]["indices"]) == card.metrics["held_out_count"] == 2000
    assert card.training["seconds_total"] <= 300


def _digit_views(version: int) -> dict[str, dict[str, float]]:
    views: dict[str, dict[str, float]] = (_version("digit", version).model_extra or {})["views"]
    return views


def test_digit_v2_reads_clean_held_out_digits_as_well_as_v1_on_the_same_split() -> None:
    v1, v2 = _version("digit", 1), _version("digit", 2)
    assert v2.metrics["accuracy"] >= 0.994
    assert v2.data["held_out"]["indices"] == v1.data["held_out"]["indices"]
    assert v2.baseline["accuracy"] < v2.metrics["accuracy"]
    assert v2.training["determinism"]["max_abs_diff"] == 0.0
    assert v2.training["determinism"]["augmentation_max_abs_diff"] == 0.0
    assert v2.training["seconds_total"] <= 1200  # 2 shared cores: 7.4 min at load 3.7, 15 min at 6


@pytest.mark.parametrize("transform", [name for name in FOREIGN if name != "inverted"])
def test_digit_v2_holds_up_under_each_foreign_transform_in_both_polarities(transform: str) -> None:
    view = _digit_views(2)[transform]
    assert view["items"] == 2 * 2000
    assert view["light_on_dark"] >= 0.97 and view["dark_on_light"] >= 0.97


def test_digit_v2_reads_inverted_held_out_digits() -> None:
    assert _digit_views(2)["clean"]["dark_on_light"] >= 0.994


def test_digit_v2_reads_printed_digits_in_both_polarities() -> None:
    view = _digit_views(2)["rendered_fonts"]
    assert view["light_on_dark"] >= 0.95 and view["dark_on_light"] >= 0.95
    printed = (_version("digit", 2).model_extra or {})["printed_digits"]
    fonts = {row["font"] for row in printed["by_font"]}
    assert len(fonts) == 22 and any("DejaVu" in f for f in fonts) and any("Liberation" in f for f in fonts)
    assert view["items"] == printed["items"] == len(fonts) * 5 * 2 * 10


def test_digit_v2_card_names_its_known_limits() -> None:
    limits = (_version("digit", 2).model_extra or {})["known_limits"]
    assert len(limits) >= 3 and all(isinstance(limit, str) and len(limit) > 40 for limit in limits)


# Today's figures of every view on the digit and wine cards: a card may state better ones, never
# worse (a view lowered by hand or by a retrain fails here, not only a target missed). A view the
# card adds must get its floor here.
DIGIT_V2_VIEWS = {  # view: (accuracy, light_on_dark, dark_on_light)
    "clean": (0.9955, 0.9955, 0.9955),
    "thin_pen": (0.9865, 0.9865, 0.9865),
    "bold_pen": (0.984, 0.984, 0.984),
    "blur": (0.9915, 0.9915, 0.9915),
    "low_resolution": (0.9835, 0.9835, 0.9835),
    "rotation": (0.9915, 0.9915, 0.9915),
    "shear": (0.994, 0.994, 0.994),
    "elastic": (0.975, 0.975, 0.975),
    "noise": (0.99275, 0.9925, 0.993),
    "off_centre": (0.9955, 0.9955, 0.9955),
    "rendered_fonts": (1.0, 1.0, 1.0),
    "noisy_photo": (0.98775, 0.988, 0.9875),
}
DIGIT_V3_VIEWS = {  # v2's own graph in int8 (python -m training digit-int8)
    "clean": (0.995, 0.995, 0.995),
    "thin_pen": (0.986, 0.986, 0.986),
    "bold_pen": (0.984, 0.984, 0.984),
    "blur": (0.9915, 0.9915, 0.9915),
    "low_resolution": (0.9835, 0.9835, 0.9835),
    "rotation": (0.9915, 0.9915, 0.9915),
    "shear": (0.9935, 0.9935, 0.9935),
    "elastic": (0.975, 0.975, 0.975),
    "noise": (0.992, 0.992, 0.992),
    "off_centre": (0.9955, 0.9955, 0.9955),
    "rendered_fonts": (1.0, 1.0, 1.0),
    "noisy_photo": (0.98775, 0.988, 0.9875),
}
DIGIT_VIEWS = {2: DIGIT_V2_VIEWS, 3: DIGIT_V3_VIEWS}
DIGIT_METRICS = {  # version: (accuracy, errors): every held-out figure of the card
    1: (0.9955, 9),
    2: (0.9955, 9),
    3: (0.995, 10),
}
INT8_GATE = 0.003
"""How far below the float version an int8 version's view may be, on every view and polarity."""
WINE_V1_ERRORS = {  # the most each error may be, in bottles
    "mae": 0.043973393738269806,
    "mae_vs_noise_free_truth": 0.03517217934131622,
    "rmse": 0.06299049407243729,
    "story_max_error": 0.0512999999999999,
}


@pytest.mark.parametrize("version", sorted(DIGIT_VIEWS))
def test_no_digit_view_falls_below_todays_figures(version: int) -> None:
    views, floors = _digit_views(version), DIGIT_VIEWS[version]
    assert set(views) == set(floors), "a view without a floor, or a floor without its view"
    stated = {
        name: tuple(views[name][k] for k in ("accuracy", "light_on_dark", "dark_on_light")) for name in views
    }
    below = {
        name: (stated[name], floor)
        for name, floor in floors.items()
        if any(got < least for got, least in zip(stated[name], floor, strict=True))
    }
    assert not below
    metrics = _version("digit", version).metrics
    assert metrics["rendered_fonts_accuracy"] >= 1.0 and metrics["worst_foreign_accuracy"] >= 0.975
    printed = (_version("digit", version).model_extra or {})["printed_digits"]
    assert printed["misread_count"] == 0
    assert min(row["accuracy"] for row in printed["by_font"] + printed["by_size"]) >= 1.0


@pytest.mark.parametrize("version", sorted(DIGIT_METRICS))
def test_no_digit_held_out_figure_falls_below_today(version: int) -> None:
    metrics = _version("digit", version).metrics
    accuracy, errors = DIGIT_METRICS[version]
    assert metrics["accuracy"] >= accuracy and metrics["errors"] <= errors
    assert metrics["held_out_count"] == 2000


def test_digit_v3_is_v2_in_int8_within_the_gate_on_every_view() -> None:
    """v3 serves v2's own weights in int8: on every view and polarity it reads at most
    INT8_GATE below v2, clean digits at least 0.993, and its card says where it came from."""
    v2, v3 = _version("digit", 2), _version("digit", 3)
    quantisation = (v3.model_extra or {})["quantisation"]
    assert quantisation["source_version"] == 2 and quantisation["calibration_items"] == 1024
    assert quantisation["held_out"]["float_accuracy"] == v2.metrics["accuracy"]
    assert quantisation["held_out"]["argmax_agreement"] >= 0.999
    assert v3.preprocessing == v2.preprocessing and v3.data == v2.data and v3.parity == v2.parity
    float_views, int8_views = _digit_views(2), _digit_views(3)
    assert list(int8_views) == list(float_views)
    lost = {
        (name, key): (float_views[name][key], int8_views[name][key])
        for name in float_views
        for key in ("accuracy", "light_on_dark", "dark_on_light")
        if int8_views[name][key] < float_views[name][key] - INT8_GATE
    }
    assert not lost
    assert int8_views["clean"]["accuracy"] >= 0.993


def test_no_wine_error_grows_above_today() -> None:
    metrics = _version("wine", 1).metrics
    grown = {name: metrics[name] for name, most in WINE_V1_ERRORS.items() if metrics[name] > most}
    assert not grown


def test_spam_v1_targets() -> None:
    card = _version("spam", 1)
    assert card.metrics["accuracy"] >= 0.99
    assert card.metrics["f1"] >= 0.98
    assert card.metrics["roc_auc"] >= 0.997
    assert 0.0 <= card.metrics["hard_ham_false_positive_rate"] < 0.2
    assert card.metrics["vocabulary_size"] >= 5000
    assert len(card.data["held_out"]["files"]) == card.metrics["held_out_count"]
    assert card.training["seconds_total"] <= 60


SPAM_SHORT_VIEW = "short messages (tests/data/short_messages.json)"


def _spam_v2_view(name: str) -> dict[str, Any]:
    views: dict[str, dict[str, Any]] = (_version("spam", 2).model_extra or {})["views"]
    return views[name]


def test_spam_v2_is_evaluated_on_v1s_held_out_split_with_a_threshold_from_validation() -> None:
    v1, v2 = _version("spam", 1), _version("spam", 2)
    assert v2.data["held_out"]["files"] == v1.data["held_out"]["files"]
    validation = set(v2.data["validation"]["files"])
    assert len(validation) == v2.data["validation_count"]
    assert not validation & set(v2.data["held_out"]["files"])
    assert v2.threshold is not None and v2.metrics["threshold"] == v2.threshold
    assert v2.metrics["vocabulary_size"] >= 5000
    assert v2.training["seconds_total"] <= 300


def test_spam_v2_states_its_calibration_and_known_limits() -> None:
    extra = _version("spam", 2).model_extra or {}
    calibration = extra["calibration"]
    assert calibration["validation_nll_after"] <= calibration["validation_nll_before"]
    assert calibration["test_brier_after"] <= 0.03
    test_views = ("full email", "body only", "first 30 words of the body")
    assert sum(row["items"] for row in calibration["reliability"]) == sum(
        extra["views"][name]["items"] for name in test_views
    )
    assert len(extra["known_limits"]) >= 3


def test_spam_v2_full_email_roc_auc_holds_up_to_v1() -> None:
    assert _spam_v2_view("full email")["roc_auc"] >= 0.996


@pytest.mark.xfail(
    strict=True,
    reason="issue 11 target missed by spam v2: full email accuracy "
    ">= 0.99, F1 >= 0.98, ROC-AUC >= 0.997 (see the card's views)",
)
def test_spam_v2_full_email_targets() -> None:
    view = _spam_v2_view("full email")
    assert view["accuracy"] >= 0.99 and view["f1"] >= 0.98 and view["roc_auc"] >= 0.997


def test_spam_v2_body_only_targets() -> None:
    view = _spam_v2_view("body only")
    assert view["accuracy"] >= 0.97 and view["ham_false_positive_rate"] <= 0.03


def test_spam_v2_first_30_words_targets() -> None:
    view = _spam_v2_view("first 30 words of the body")
    assert view["accuracy"] >= 0.93 and view["ham_false_positive_rate"] <= 0.05


def test_spam_v2_short_messages_do_better_than_v1() -> None:
    """v1 calls 12 of the 32 short ham messages spam and gets 0.80 of the 64 right (at 0.5)."""
    view = _spam_v2_view(SPAM_SHORT_VIEW)
    assert view["items"] == 64 and view["ham_called_spam"] <= 8 and view["accuracy"] >= 0.85


@pytest.mark.xfail(
    strict=True,
    reason="issue 11 target missed by spam v2: short messages >= 0.95 "
    "with at most 2 ham called spam (known limit: the corpus's ham is 2002 list mail)",
)
def test_spam_v2_short_message_targets() -> None:
    view = _spam_v2_view(SPAM_SHORT_VIEW)
    assert view["accuracy"] >= 0.95 and view["ham_called_spam"] <= 2


SPAM_V3_VIEWS = {
    "full email": "full email",
    "body only": "body only",
    "first 30 words": "first 30 words of the body",
    "SMS held-out": "SMS held-out (SMS Spam Collection)",
    "short messages": SPAM_SHORT_VIEW,
    "everyday messages": "short messages (tests/data/everyday_messages.json)",
}


def _spam_v3_view(name: str) -> dict[str, Any]:
    views: dict[str, dict[str, Any]] = (_version("spam", 3).model_extra or {})["views"]
    return views[SPAM_V3_VIEWS[name]]


def test_spam_v3_states_every_view_with_its_confusion_matrix() -> None:
    for name in SPAM_V3_VIEWS:
        view = _spam_v3_view(name)
        for metric in ("accuracy", "f1", "roc_auc", "ham_false_positive_rate", "recall"):
            assert 0.0 <= view[metric] <= 1.0, (name, metric)
        assert sum(map(sum, view["confusion"])) == view["items"] > 0


def test_spam_v3_holds_out_text_messages_and_credits_their_authors() -> None:
    v1, v3 = _version("spam", 1), _version("spam", 3)
    assert v3.data["held_out"]["files"] == v1.data["held_out"]["files"]
    sms = v3.data["sms"]
    held_out, validation = set(sms["held_out"]["lines"]), set(sms["validation"]["lines"])
    assert len(held_out) == _spam_v3_view("SMS held-out")["items"] and not held_out & validation
    assert "Almeida" in sms["credit"] and "Yamakami" in sms["credit"] and "CC BY 4.0" in sms["credit"]
    assert len(sms["file_sha256"]) == len(sms["wheel_sha256"]) == 64
    assert "SMS" in (v3.model_extra or {})["decision_threshold"]["validation_ham_false_positive_rate"]
    # A threshold per kind of text; the one for bare texts also stands as the card's one threshold.
    assert v3.thresholds is not None and set(v3.thresholds) == {"email", "text"}
    assert v3.threshold == v3.thresholds["text"]
    assert v3.training["seconds_total"] <= 600


def test_spam_v3_reads_token_ids_and_names_gtube() -> None:
    card = _version("spam", 3)
    assert [(s.name, s.dtype, s.shape) for s in card.inputs] == [
        ("token_ids", "int64", [-1, -1]),
        ("weights", "float32", [-1, -1]),
    ]
    assert card.preprocessing.kind == "token_ids"
    assert "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL" in card.preprocessing.test_patterns["GTUBE"]


def test_spam_v3_full_email_roc_auc_target() -> None:
    assert _spam_v3_view("full email")["roc_auc"] >= 0.997


def test_spam_v3_judges_whole_emails_at_least_as_well_as_v2() -> None:
    """Whole emails have a threshold of their own, so they no longer pay for the caution text
    messages call for (at v3's one threshold, 0.79: 0.9831 against v2's 0.9856)."""
    v2, v3 = _spam_v2_view("full email"), _spam_v3_view("full email")
    assert v3["accuracy"] >= v2["accuracy"] and v3["f1"] >= v2["f1"]


@pytest.mark.xfail(
    strict=True,
    reason="issue 21 target missed by spam v3: full email accuracy >= 0.99 and F1 >= 0.98 "
    "(0.9865 and 0.978 at the emails' own threshold, 0.47: 7 ham called spam, 9 spam missed)",
)
def test_spam_v3_full_email_accuracy_and_f1_targets() -> None:
    view = _spam_v3_view("full email")
    assert view["accuracy"] >= 0.99 and view["f1"] >= 0.98


@pytest.mark.xfail(
    strict=True,
    reason="issue 21 target missed by spam v3: body only ham false-positive rate <= 2% (2.3%: "
    "bodies that open with a header block, such as feed items, are judged as emails, at 0.47)",
)
def test_spam_v3_body_only_ham_false_positive_target() -> None:
    assert _spam_v3_view("body only")["ham_false_positive_rate"] <= 0.02


@pytest.mark.xfail(
    strict=True, reason="issue 21 target missed by spam v3: body only accuracy >= 0.98 (0.9695)"
)
def test_spam_v3_body_only_accuracy_target() -> None:
    assert _spam_v3_view("body only")["accuracy"] >= 0.98


def test_spam_v3_first_30_words_ham_false_positive_target() -> None:
    assert _spam_v3_view("first 30 words")["ham_false_positive_rate"] <= 0.03


@pytest.mark.xfail(
    strict=True, reason="issue 21 target missed by spam v3: first 30 words accuracy >= 0.95 (0.941)"
)
def test_spam_v3_first_30_words_accuracy_target() -> None:
    assert _spam_v3_view("first 30 words")["accuracy"] >= 0.95


@pytest.mark.xfail(
    strict=True,
    reason="issue 21 target missed by spam v3: SMS held-out accuracy >= 0.985, spam recall >= 0.92, "
    "ham false-positive rate <= 0.5% (0.980, 0.884, 0.63%)",
)
def test_spam_v3_sms_held_out_targets() -> None:
    view = _spam_v3_view("SMS held-out")
    assert view["accuracy"] >= 0.985 and view["recall"] >= 0.92 and view["ham_false_positive_rate"] <= 0.005


def test_spam_v3_short_messages_call_at_most_two_ham_spam_and_beat_v2() -> None:
    view = _spam_v3_view("short messages")
    assert view["items"] == 64 and view["ham_called_spam"] <= 2
    assert view["accuracy"] > _spam_v2_view(SPAM_SHORT_VIEW)["accuracy"]


@pytest.mark.xfail(
    strict=True, reason="issue 21 target missed by spam v3: short messages accuracy >= 0.95 (0.9375)"
)
def test_spam_v3_short_message_accuracy_target() -> None:
    assert _spam_v3_view("short messages")["accuracy"] >= 0.95


def test_wine_targets() -> None:
    _, card = _latest("wine")
    assert card.metrics["mae"] <= 0.1
    assert card.metrics["mae"] * 5 <= card.baseline["mae"]
    assert card.metrics["story_max_error"] <= 0.2
    story = card.metrics["story"]
    assert story["Dahlia + Stiffy"] == pytest.approx(4.3, abs=0.2)
    assert story["Agatha + Dahlia + Stiffy"] == pytest.approx(0.0, abs=0.2)
    assert card.training["seconds_total"] <= 60


SPAM_V4_VIEWS = SPAM_V3_VIEWS | {
    "Mendeley held-out": "SMS held-out (Mendeley SMS phishing)",
    "SmishTank": "SmishTank (evaluation only)",
    "phishing_pot": "phishing_pot (evaluation only)",
    "Super SMS": "Super SMS 2018-23 (evaluation only)",
}
# Spam v3's figures on the views v4 shares with it: its card's accuracy, and on the modern sets it
# never saw what `python -m training.modern_spam 3` measures (SmishTank 326 of 520 caught,
# phishing_pot 525 of 695, Super SMS 620 of 1,500 spam caught and 1,469 of 1,500 ham right).
# A v4 retrain that loses ground on any of them fails.
SPAM_V3_FLOORS = {
    ("full email", "accuracy"): 0.9864,
    ("full email", "roc_auc"): 0.9980,
    ("body only", "accuracy"): 0.9695,
    ("first 30 words", "accuracy"): 0.9406,
    ("SMS held-out", "accuracy"): 0.9801,
    ("short messages", "accuracy"): 0.9375,
    ("everyday messages", "accuracy"): 0.8166,
    ("SmishTank", "spam_caught"): 326 / 520,
    ("phishing_pot", "spam_caught"): 525 / 695,
    ("Super SMS", "spam_caught"): 620 / 1500,
    ("Super SMS", "ham_right"): 1469 / 1500,
}


def _spam_v4_view(name: str) -> dict[str, Any]:
    views: dict[str, dict[str, Any]] = (_version("spam", 4).model_extra or {})["views"]
    return views[SPAM_V4_VIEWS[name]]


def test_spam_v4_states_every_view_and_where_each_modern_set_comes_from() -> None:
    card = _version("spam", 4)
    for name in SPAM_V4_VIEWS:
        view = _spam_v4_view(name)
        assert sum(map(sum, view["confusion"])) == view["items"] > 0, name
    for name, spec in card.data["evaluation_only"].items():
        view = (card.model_extra or {})["views"][name]
        assert view["source"] == spec["source"] and view["licence"] == spec["licence"] and view["era"]
        assert spec["use"].startswith("evaluation only") and len(spec["file_sha256"]) == 64
    assert "Mishra" in card.data["mendeley"]["credit"] and "CC BY 4.0" in card.data["mendeley"]["credit"]
    assert card.data["sms"]["held_out"] == _version("spam", 3).data["sms"]["held_out"]
    assert card.data["held_out"]["files"] == _version("spam", 3).data["held_out"]["files"]


def test_spam_v4_carries_the_shortener_list_it_was_trained_with() -> None:
    links = _version("spam", 4).preprocessing
    assert isinstance(links, TokenIdVocabulary) and links.links is not None and links.subwords is not None
    assert len(links.links.shorteners) == 1479 and {"bit.ly", "is.gd", "tinyurl.com"} <= set(
        links.links.shorteners
    )
    assert "antispam-link-shorteners==0.2.1" in links.links.shorteners_source


# Where v4 loses ground on v3 (each a strict xfail, so that a retrain that regains it says so):
# (view, metric) -> v4's figure and what it is.
SPAM_V4_BELOW_V3 = {
    ("full email", "roc_auc"): "0.9956: a few spam emails score lower than v3 scored them",
    ("short messages", "accuracy"): "0.906: 5 of the 32 ham called spam (v3: 2), 1 spam missed (v3: 2)",
    ("Super SMS", "ham_right"): "0.975 (1,462 of 1,500; v3 1,469)",
}


def _floor_case(view: str, metric: str) -> Any:
    if (view, metric) in SPAM_V4_BELOW_V3:
        reason = f"spam v4 below v3 on {view} {metric}: {SPAM_V4_BELOW_V3[view, metric]}"
        return pytest.param(
            view, metric, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)
        )
    return pytest.param(view, metric)


@pytest.mark.parametrize(("view", "metric"), [_floor_case(*key) for key in SPAM_V3_FLOORS], ids=str)
def test_spam_v4_holds_v3s_ground_on_every_view(view: str, metric: str) -> None:
    assert _spam_v4_view(view)[metric] >= SPAM_V3_FLOORS[view, metric] - 1e-9


# Issue 29's targets, and v4's figures where it misses them.
SPAM_V4_TARGETS = {
    ("SmishTank", "spam_caught"): (0.90, "0.764 (397 of 520)"),
    ("phishing_pot", "spam_caught"): (0.95, "0.809 (562 of 695)"),
    ("Super SMS", "ham_right"): (0.99, "0.975"),
    ("Super SMS", "spam_caught"): (0.75, "0.591"),
    ("full email", "accuracy"): (0.99, "0.9865"),
    ("full email", "roc_auc"): (0.997, "0.9956"),
    ("SMS held-out", "accuracy"): (0.985, "0.9845 (14 of 906 wrong; 13 would meet it)"),
    ("short messages", "accuracy"): (0.95, "0.906"),
    ("everyday messages", "accuracy"): (0.95, "0.900"),
}


def _target_case(view: str, metric: str) -> Any:
    target, figure = SPAM_V4_TARGETS[view, metric]
    reason = f"issue 29 target missed by spam v4: {view} {metric} >= {target} ({figure})"
    return pytest.param(
        view, metric, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)
    )


@pytest.mark.parametrize(("view", "metric"), [_target_case(*key) for key in SPAM_V4_TARGETS], ids=str)
def test_spam_v4_targets(view: str, metric: str) -> None:
    assert _spam_v4_view(view)[metric] >= SPAM_V4_TARGETS[view, metric][0]


def test_spam_v4_trains_in_minutes_and_deterministically() -> None:
    card = _version("spam", 4)
    assert card.training["determinism"]["max_abs_diff"] == 0.0 and card.training["seconds_total"] <= 1200

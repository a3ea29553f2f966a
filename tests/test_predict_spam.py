"""A mail client asks whether an email is spam."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from samples import Sample, latest_version, samples, versions

from service.card import ModelCard
from service.features import BagOfWords
from service.features.spam import TextKind, read_email
from service.models.loading import spam_encoder

from support.inprocess import MakeClient
from support.server import MODELS_DIR


def _confident(label: str) -> str:
    """A held-out email of this label that the trained model classified correctly and surely."""
    for sample in samples("spam"):
        spam_probability = sample.output[1]
        sure = spam_probability > 0.9 if label == "spam" else spam_probability < 0.1
        if sample.label == label and sure:
            text: str = sample.input["text"]
            return text
    raise AssertionError(f"no confidently classified held-out {label} email in samples.json")


@pytest.mark.parametrize("label", ["spam", "ham"])
def test_a_held_out_email_gets_its_verdict(client: httpx.Client, label: str) -> None:
    response = client.post("/predict/spam", json={"text": _confident(label)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spam"] is (label == "spam")
    assert 0.0 <= body["probability"] <= 1.0
    assert body["model"]["name"] == "spam"


def test_a_body_without_headers_is_accepted(client: httpx.Client) -> None:
    text = "WIN a FREE prize!!! Click here now to claim your $1,000,000 cash. Act now, limited offer!"
    response = client.post("/predict/spam", json={"text": text})
    assert response.status_code == 200
    assert response.json()["spam"] is True


def test_empty_text_is_refused(client: httpx.Client) -> None:
    response = client.post("/predict/spam", json={"text": ""})
    assert response.status_code == 422
    assert response.json()["error"].startswith("text")


def test_text_over_the_limit_is_refused(make_client: MakeClient) -> None:
    http = make_client(max_email_chars=100)
    response = http.post("/predict/spam", json={"batch": [{"text": "ok"}, {"text": "x" * 101}]})
    assert response.status_code == 422
    assert response.json()["error"].startswith("batch.1.text") and "100" in response.json()["error"]


def test_a_batch_answers_in_order(client: httpx.Client) -> None:
    texts = [_confident("spam"), _confident("ham"), _confident("spam")]
    response = client.post("/predict/spam", json={"batch": [{"text": t} for t in texts]})
    assert response.status_code == 200
    assert [p["spam"] for p in response.json()["predictions"]] == [True, False, True]


def _sample_kind(sample: Sample, encoder: BagOfWords) -> str:
    """The kind of text training recorded for the sample (spam v4 on), so that a service that
    misjudged the kind would be caught; older versions' samples do not record it."""
    return sample.kind or encoder.kind(encoder.encode(sample.input["text"]))


@pytest.mark.parametrize("own_lower", [True, False], ids=["own-threshold-lower", "own-threshold-higher"])
@pytest.mark.parametrize("kind", ["email", "text"])
def test_each_kind_of_text_is_judged_by_its_own_threshold_unless_an_operator_sets_one(
    make_client: MakeClient, tmp_path: Path, kind: TextKind, own_lower: bool
) -> None:
    """A held-out sample of each kind (as training recorded it: an email that came with its
    headers, or a bare text), in a copy of the latest version whose thresholds put its probability
    between the two: the verdict is its own kind's threshold's, on whichever side of the other
    one it is, and the operator's when NNSERVE_SPAM_THRESHOLD is set (here to the other kind's).
    For the email, its body alone (no headers) is judged at the text threshold."""
    version = MODELS_DIR / "spam" / str(latest_version("spam"))
    encoder = spam_encoder(ModelCard.read(version))
    sample = next(
        s for s in samples("spam") if _sample_kind(s, encoder) == kind and 0.02 < s.output[1] < 0.98
    )
    probability = sample.output[1]
    own, other = (probability / 2, (probability + 1) / 2)[:: 1 if own_lower else -1]
    thresholds = {kind: own, "text" if kind == "email" else "email": other}
    folder = tmp_path / "spam" / version.name
    shutil.copytree(version, folder)
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(
        json.dumps(card | {"threshold": thresholds["text"], "thresholds": thresholds})
    )
    default, overridden = (
        make_client(models_dir=tmp_path),
        make_client(models_dir=tmp_path, spam_threshold=other),
    )
    answer = default.post("/predict/spam", json={"text": sample.input["text"]}).json()
    assert answer["probability"] == pytest.approx(probability, abs=1e-5)
    assert answer["spam"] is own_lower
    assert (
        overridden.post("/predict/spam", json={"text": sample.input["text"]}).json()["spam"] is not own_lower
    )
    if kind == "email":
        body = default.post("/predict/spam", json={"text": read_email(sample.input["text"]).body}).json()
        assert body["spam"] is (body["probability"] >= thresholds["text"])


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
LUNCH = "Hi team, lunch at noon tomorrow? Thanks"


def test_the_gtube_test_string_anywhere_is_spam_with_probability_one(client: httpx.Client) -> None:
    """Mail administrators send SpamAssassin's GTUBE to check a filter end to end: the latest
    card names it, so it is spam whatever the words around it, and the answer says why."""
    email = f"From: admin@example.org\nSubject: filter check\n\n{LUNCH}\n\n{GTUBE}\n"
    response = client.post("/predict/spam", json={"batch": [{"text": email}, {"text": LUNCH}]})
    first, second = response.json()["predictions"]
    assert first == {"spam": True, "probability": 1.0, "test_pattern": "GTUBE"}
    assert "test_pattern" not in second and second["spam"] is False
    assert client.post("/predict/spam", json={"text": GTUBE}).json()["test_pattern"] == "GTUBE"


def _spam_inferences(http: httpx.Client) -> float:
    """Network runs of spam's versions for clients so far (nnserve_model_inferences_total)."""
    families = text_string_to_metric_families(http.get("/metrics").text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "nnserve_model_inferences_total" and sample.labels["model"] == "spam"
    )


def test_a_batch_of_test_patterns_is_answered_without_the_network(client: httpx.Client) -> None:
    """The pattern decides the answer, so the network is not run on it (and then thrown away)."""
    before = _spam_inferences(client)
    batch = {"batch": [{"text": GTUBE}, {"text": f"{LUNCH}\n{GTUBE}"}]}
    answers = client.post("/predict/spam", json=batch).json()["predictions"]
    assert [a["test_pattern"] for a in answers] == ["GTUBE", "GTUBE"]
    assert _spam_inferences(client) == before
    client.post("/predict/spam", json={"batch": [{"text": GTUBE}, {"text": LUNCH}]})
    assert _spam_inferences(client) == before + 1  # the lunch email alone ran


@pytest.mark.parametrize("how", ["pinned", "canary"])
def test_every_version_answers_the_test_pattern(
    client: httpx.Client, make_client: MakeClient, how: str
) -> None:
    """The pattern is the model's, not one version's: a client pinned to the oldest version, whose
    card names no pattern, or sent to it by a canary, gets the same answer to the filter test."""
    oldest = versions("spam")[0]
    http, params = (
        (client, {"version": oldest}) if how == "pinned" else (make_client(traffic=f"spam={oldest}:100"), {})
    )
    answer = http.post("/predict/spam", params=params, json={"text": f"{LUNCH} {GTUBE}"}).json()
    assert answer == {
        "spam": True,
        "probability": 1.0,
        "test_pattern": "GTUBE",
        "model": {"name": "spam", "version": oldest},
    }
    explained = http.post("/explain/spam", params=params, json={"text": f"{LUNCH} {GTUBE}"}).json()
    assert explained["test_pattern"] == "GTUBE" and explained["model"]["version"] == oldest


@pytest.mark.parametrize("path", ["tests/data/short_messages.json", "tests/data/everyday_messages.json"])
def test_the_committed_short_messages_get_the_verdicts_the_card_counts(
    client: httpx.Client, path: str
) -> None:
    """The card's short-message views were measured in training; the service, sent the same
    messages, must call the same ham spam and miss the same spam (so a skew between training's
    features and the service's, or a wrong threshold, shows here)."""
    card = ModelCard.read(MODELS_DIR / "spam" / str(latest_version("spam")))
    view = (card.model_extra or {})["views"][f"short messages ({path})"]
    items = json.loads((MODELS_DIR.parent / path).read_text())["items"]
    response = client.post("/predict/spam", json={"batch": [{"text": item["text"]} for item in items]})
    assert response.status_code == 200, response.text
    called = [p["spam"] for p in response.json()["predictions"]]
    wrong = [
        item["text"] for item, spam in zip(items, called, strict=True) if spam != (item["label"] == "spam")
    ]
    assert (
        sum(spam and item["label"] == "ham" for item, spam in zip(items, called, strict=True))
        == view["ham_called_spam"]
    )
    assert (
        sum(not spam and item["label"] == "spam" for item, spam in zip(items, called, strict=True))
        == view["spam_missed"]
    )
    assert wrong == [error["text"] for error in view["errors"]]

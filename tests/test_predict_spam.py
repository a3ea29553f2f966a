"""A mail client asks whether an email is spam."""

from __future__ import annotations

import json

import httpx
import pytest
from samples import latest_version, samples

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


def test_the_cards_threshold_decides_unless_an_operator_sets_one(make_client: MakeClient) -> None:
    card = json.loads((MODELS_DIR / "spam" / str(latest_version("spam")) / "card.json").read_text())
    threshold = card["threshold"]
    between = [s.input["text"] for s in samples("spam") if 0.5 <= s.output[1] < threshold]
    assert between, f"no held-out sample with a probability in [0.5, {threshold})"
    default, overridden = make_client(), make_client(spam_threshold=0.5)
    assert default.post("/predict/spam", json={"text": between[0]}).json()["spam"] is False
    assert overridden.post("/predict/spam", json={"text": between[0]}).json()["spam"] is True


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


def test_a_version_whose_card_names_no_test_pattern_reads_gtube_as_words(client: httpx.Client) -> None:
    answer = client.post("/predict/spam", params={"version": 2}, json={"text": f"{LUNCH} {GTUBE}"}).json()
    assert "test_pattern" not in answer and answer["probability"] < 1.0

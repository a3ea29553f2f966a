"""A mail client asks whether an email is spam."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from samples import latest_version, samples, versions

from service.card import ModelCard
from service.features.spam import TextKind
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


@pytest.mark.parametrize("kind", ["email", "text"])
def test_each_kind_of_text_is_judged_by_its_own_threshold_unless_an_operator_sets_one(
    make_client: MakeClient, kind: TextKind
) -> None:
    """The latest card carries a threshold for a text that came with headers ('email') and one for
    a bare text: a held-out sample scored between the two is judged by its own kind's, and by the
    operator's when NNSERVE_SPAM_THRESHOLD is set (here to the other kind's)."""
    card = ModelCard.read(MODELS_DIR / "spam" / str(latest_version("spam")))
    assert card.thresholds is not None
    own, other = card.thresholds[kind], card.thresholds["text" if kind == "email" else "email"]
    encoder = spam_encoder(card)
    low, high = sorted((own, other))
    between = [
        s.input["text"]
        for s in samples("spam")
        if low <= s.output[1] < high and encoder.kind(encoder.encode(s.input["text"])) == kind
    ]
    assert between, f"no {kind} sample with a probability in [{low}, {high})"
    default, overridden = make_client(), make_client(spam_threshold=other)
    assert default.post("/predict/spam", json={"text": between[0]}).json()["spam"] is (own < other)
    assert overridden.post("/predict/spam", json={"text": between[0]}).json()["spam"] is (other < own)


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

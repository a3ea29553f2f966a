"""A mail client asks why an email was called spam or ham: the words that moved the probability,
each with its exact effect, and the tokens the model read, to highlight them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from samples import latest_version

from service.card import ModelCard
from service.features import TokenIds
from service.models.loading import spam_encoder

from support.inprocess import MakeClient
from support.server import MODELS_DIR

SPAM = (
    "Dear friend, you have been selected to receive a FREE cash prize of $1,000,000!\n"
    "Click here now to claim your money. This limited time offer expires today.\n"
    "Act now! 100% guaranteed, no risk. To be removed from our mailing list reply REMOVE."
)
HAM = (
    "Hi Bob,\n\nThanks for sending the notes. I looked through the patch you mentioned and I think the "
    "change to the config parser is fine, but could you add a test for the empty file case before we "
    "merge it?\n\nCheers,\nAlice"
)


def _vocabulary() -> list[str]:
    card = json.loads((MODELS_DIR / "spam" / str(latest_version("spam")) / "card.json").read_text())
    vocabulary: list[str] = card["preprocessing"]["vocabulary"]
    return vocabulary


def _places(body: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(t["token"], t["start"], t["end"]) for t in body["tokens"]]


def _explain(client: httpx.Client, text: str) -> dict[str, Any]:
    response = client.post("/explain/spam", json={"text": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _probability(client: httpx.Client, text: str) -> float:
    probability: float = client.post("/predict/spam", json={"text": text}).json()["probability"]
    return probability


def _without(body: dict[str, Any], word: str) -> str:
    """The text the model read with every occurrence of `word` blanked out, by the answer's spans."""
    text = list(body["text"])
    for token in body["tokens"]:
        if token["token"] == word:
            text[token["start"] : token["end"]] = " " * (token["end"] - token["start"])
    return "".join(text)


@pytest.mark.parametrize(("text", "side"), [(SPAM, "spam_ward"), (HAM, "ham_ward")], ids=["spam", "ham"])
def test_removing_the_strongest_word_moves_the_probability_by_its_stated_effect(
    client: httpx.Client, text: str, side: str
) -> None:
    body = _explain(client, text)
    assert body["text"] == text  # a body without headers is read as it is
    assert body["probability"] == _probability(client, text)
    strongest = body[side][0]
    assert (strongest["effect"] > 0) is (side == "spam_ward")
    after = _probability(client, _without(body, strongest["word"]))
    assert after == pytest.approx(body["probability"] - strongest["effect"], abs=1e-6)


def test_every_listed_word_has_its_exact_effect(client: httpx.Client) -> None:
    body = _explain(client, SPAM)
    listed = body["spam_ward"] + body["ham_ward"]
    assert 0 < len(body["spam_ward"]) <= 10 and len(body["ham_ward"]) <= 10
    for word in listed:
        after = _probability(client, _without(body, word["word"]))
        assert body["probability"] - after == pytest.approx(word["effect"], abs=1e-6), word
    spam_ward = [w["effect"] for w in body["spam_ward"]]
    assert spam_ward == sorted(spam_ward, reverse=True)
    others = [
        t["effect"]
        for t in body["tokens"]
        if t["effect"] is not None and t["token"] not in {w["word"] for w in listed}
    ]
    assert all(effect <= min(spam_ward) for effect in others)


def test_the_spam_example_is_pushed_by_spammy_words(client: httpx.Client) -> None:
    body = _explain(client, SPAM)
    assert body["spam"] is True
    classics = {
        "click",
        "free",
        "remove",
        "guaranteed",
        "money",
        "cash",
        "prize",
        "offer",
        "limited",
        "!",
        "$",
    }
    assert classics & {w["word"] for w in body["spam_ward"][:5]}


def test_tokens_point_at_the_words_of_the_text_the_model_read(client: httpx.Client) -> None:
    raw = "From: a@example.com\nSubject: Win CASH now\nX-Mailer: x\n\nClick HERE, win it all!"
    body = _explain(client, raw)
    assert body["text"] == "Win CASH now\nClick HERE, win it all!"  # subject and body, no headers
    assert [t["token"] for t in body["tokens"]] == "win cash now click here win it all !".split()
    for token in body["tokens"]:
        assert body["text"][token["start"] : token["end"]].lower() == token["token"]
        assert (token["effect"] is not None) is token["known"]
    effects = {t["token"]: t["effect"] for t in body["tokens"] if t["known"]}
    header_marker = "<headers>" in _vocabulary()  # spam v2 reads the header block as a word of its own
    assert body["known_words"] == body["examined"] == len(effects) + header_marker and body["capped"] is False


def test_a_header_block_is_explained_where_the_vocabulary_has_a_word_for_it(client: httpx.Client) -> None:
    """Spam v2 reads "<headers>" (the email came with a header block) like a word: its effect is the
    difference between the email and its body alone."""
    body = "Lunch at noon tomorrow?"
    raw = f"From: alice@example.org\nTo: bob@example.org\n\n{body}"
    explained = _explain(client, raw)
    listed = {w["word"]: w["effect"] for w in explained["spam_ward"] + explained["ham_ward"]}
    assert explained["text"] == body and _places(explained) == _places(_explain(client, body))
    if "<headers>" in _vocabulary():
        assert explained["known_words"] == 5
        difference = explained["probability"] - _probability(client, body)
        assert listed["<headers>"] == pytest.approx(difference, abs=1e-6)
    else:
        assert explained["known_words"] == 4 and "<headers>" not in listed


def test_offsets_hold_when_lowercasing_changes_the_length(client: httpx.Client) -> None:
    body = _explain(client, "\u0130stanbul offer: click here")  # U+0130 lowercases to two characters
    for token in body["tokens"]:
        assert body["text"][token["start"] : token["end"]] == token["token"]


def test_a_long_email_is_capped_and_says_so(make_client: MakeClient) -> None:
    client = make_client(explain_max_words=5)
    body = _explain(client, SPAM)
    known_in_order = list(dict.fromkeys(t["token"] for t in body["tokens"] if t["known"]))
    # Entries with no place in the text ("<headers>"; v3's shapes of numbers and links) go first.
    placeless = body["known_words"] - len(known_in_order)
    assert body["capped"] is True and body["examined"] == 5 and 0 <= placeless < 5
    assert body["note"].startswith(f"examined the first 5 of {body['known_words']} known words")
    examined = [t["token"] for t in body["tokens"] if t["effect"] is not None]
    assert list(dict.fromkeys(examined)) == known_in_order[: 5 - placeless]


def test_the_verdict_is_the_predictions(client: httpx.Client) -> None:
    for text in (SPAM, HAM):
        body = _explain(client, text)
        assert body["spam"] is client.post("/predict/spam", json={"text": text}).json()["spam"]
        assert body["spam"] is (body["probability"] >= body["threshold"])


def test_a_version_whose_card_has_a_threshold_is_judged_by_it(
    client: httpx.Client, make_client: MakeClient, tmp_path: Path
) -> None:
    """Spam v2 carries the threshold chosen at training time, v3 one per kind of text; both routes
    use the one for the text's kind. Here a copy of the latest version gets a threshold for bare
    texts (the spam example has no headers) just above the spam example's probability."""
    probability = _probability(client, SPAM)
    threshold = (probability + 1.0) / 2
    version = MODELS_DIR / "spam" / str(latest_version("spam"))
    folder = tmp_path / "spam" / version.name
    shutil.copytree(version, folder)
    card = json.loads((folder / "card.json").read_text())
    thresholds = (card.get("thresholds") or {}) | {"text": threshold}
    (folder / "card.json").write_text(json.dumps(card | {"threshold": threshold, "thresholds": thresholds}))
    strict = make_client(models_dir=tmp_path)
    body = _explain(strict, SPAM)
    assert body["threshold"] == threshold and body["probability"] == probability
    assert body["spam"] is False
    assert strict.post("/predict/spam", json={"text": SPAM}).json()["spam"] is False


def test_a_text_over_the_limit_is_refused_like_a_prediction(make_client: MakeClient) -> None:
    client = make_client(max_email_chars=50)
    explained = client.post("/explain/spam", json={"text": SPAM})
    assert explained.status_code == 422
    assert explained.json() == client.post("/predict/spam", json={"text": SPAM}).json()


@pytest.mark.parametrize(
    ("body", "loc"),
    [({"batch": [{"text": SPAM}]}, "batch"), ({"text": ""}, "text"), ({"text": 42}, "text")],
    ids=["batch", "empty", "not-a-string"],
)
def test_bad_bodies_are_422(client: httpx.Client, body: dict[str, Any], loc: str) -> None:
    response = client.post("/explain/spam", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(loc)


@pytest.mark.parametrize("text", [SPAM, HAM], ids=["spam", "ham"])
def test_removing_a_word_changes_the_log_odds_by_exactly_its_stated_effect(
    client: httpx.Client, text: str
) -> None:
    """The log-odds effect is what the "Why?" view ranks and colours by: it stays informative where
    the probability is saturated (the spam example's words each move it by under a point)."""
    body = _explain(client, text)
    assert (body["log_odds"] > 0) is (body["probability"] > 0.5)
    listed = body["spam_ward"] + body["ham_ward"]
    assert listed and all((w["log_odds_effect"] > 0) is (w in body["spam_ward"]) for w in listed)
    for word in listed:
        after = _explain(client, _without(body, word["word"]))["log_odds"]
        assert body["log_odds"] - after == pytest.approx(word["log_odds_effect"], abs=1e-4), word
    ranked = [w["log_odds_effect"] for w in body["spam_ward"]]
    assert ranked == sorted(ranked, reverse=True)


def test_on_a_saturated_spam_email_the_spammy_words_carry_it_in_log_odds(client: httpx.Client) -> None:
    body = _explain(client, SPAM)
    assert body["probability"] > 0.999
    assert body["spam_ward"][0]["log_odds_effect"] > 0.5
    ham_ward = {w["word"] for w in body["ham_ward"]}
    assert not ham_ward & {"prize", "guaranteed", "free", "cash", "click", "claim"}


def test_the_gtube_test_string_is_explained_as_the_test_pattern(client: httpx.Client) -> None:
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    body = _explain(client, f"{HAM}\n{gtube}")
    assert body["spam"] is True and body["probability"] == 1.0 and body["test_pattern"] == "GTUBE"
    assert "GTUBE" in body["note"] and body["examined"] == 0 and body["log_odds"] is None
    assert body["spam_ward"] == body["ham_ward"] == []


SMISHING = "Your parcel is on hold: https://bit.ly/3xYz12"


def _log_odds_of(client: httpx.Client, encoder: TokenIds, ids: list[int]) -> float:
    """The log-odds of the latest version for these token ids, each at the weight the encoder
    gives it, sent as tensors (the V2 protocol)."""
    weights = encoder.weights(np.array(ids)).tolist()
    request = {
        "inputs": [
            {"name": "token_ids", "shape": [1, len(ids)], "datatype": "INT64", "data": [ids]},
            {"name": "weights", "shape": [1, len(ids)], "datatype": "FP32", "data": [weights]},
        ]
    }
    response = client.post("/v2/models/spam/infer", json=request)
    assert response.status_code == 200, response.text
    ham, spam = response.json()["outputs"][0]["data"]
    return math.log(spam) - math.log(ham)


def test_a_shortened_link_is_one_unit_and_explained_by_what_it_is(client: httpx.Client) -> None:
    """Spam v4 reads a link whole and says what it is: the explanation names "<shortened link>"
    with the exact log-odds the bag loses without it, and the link itself, taken out of the
    text, changes the log-odds by exactly its stated effect (its words, pieces and features go
    with it)."""
    card = ModelCard.read(MODELS_DIR / "spam" / str(latest_version("spam")))
    encoder = spam_encoder(card)
    assert isinstance(encoder, TokenIds)
    body = _explain(client, SMISHING)
    assert [t["token"] for t in body["tokens"]] == [
        "your",
        "parcel",
        "is",
        "on",
        "hold",
        "https://bit.ly/3xyz12",
    ]
    listed = {w["word"]: w for w in body["spam_ward"] + body["ham_ward"]}
    assert {"<link>", "<shortened link>", "https://bit.ly/3xyz12"} <= set(listed)
    ids = encoder.encode(SMISHING).tolist()
    shortened = encoder.vocabulary.index("<shortened link>")
    without = _log_odds_of(client, encoder, [i for i in ids if i != shortened])
    assert body["log_odds"] - without == pytest.approx(
        listed["<shortened link>"]["log_odds_effect"], abs=1e-4
    )
    link = listed["https://bit.ly/3xyz12"]
    after = _explain(client, _without(body, "https://bit.ly/3xyz12"))["log_odds"]
    assert body["log_odds"] - after == pytest.approx(link["log_odds_effect"], abs=1e-4)


def test_a_misspelt_word_the_vocabulary_lacks_still_counts_by_its_pieces(client: httpx.Client) -> None:
    """ "verifcation" is in no vocabulary; spam v4 reads it by its spelling pieces, so it is a
    known word with an effect of its own, where v3 skipped it."""
    body = _explain(client, "Account verifcation needed today")
    token = next(t for t in body["tokens"] if t["token"] == "verifcation")
    assert "verifcation" not in _vocabulary()
    assert token["known"] is True and token["log_odds_effect"] is not None
    v3 = client.post(
        "/explain/spam", params={"version": 3}, json={"text": "Account verifcation needed today"}
    )
    assert next(t for t in v3.json()["tokens"] if t["token"] == "verifcation")["known"] is False

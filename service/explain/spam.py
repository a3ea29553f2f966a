"""Why the spam network calls an email spam or ham: the words that moved it, exactly.

The model reads a binary bag of words, so a word's effect is the score with the email as sent minus
the score with every occurrence of that word gone: one network row per known word present, all in
one call (the email as sent runs in a call of its own, as /predict/spam runs it). Each effect is
given twice: on the log-odds (the logit, ln(p / (1 - p))), which is where the network adds up its
evidence and which stays informative when the probability is saturated, and in probability points.
Words are ranked by their log-odds effect; positive effects pushed toward spam, negative toward ham.
Entries of the bag that no word of the text makes (spam v2's and v3's "<headers>": the email came
with a header block; v3's shapes, such as "<link>") are examined first, then the words in reading
order, each taken out with the shapes only it made; past `max_words` the rest are not examined, and
the answer says so. The tokens come back with their places in the text the model read (subject and
body, no headers), so a client can highlight them. A text holding a test pattern the card names
(GTUBE) is spam whatever its words, so none is examined.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from service.dataplane import DataPlane
from service.features import BagOfWords, email_text
from service.features.spam import EmailText
from service.models.loading import ServingModel

TOP_WORDS = 10
SPAM_COLUMN = 1  # the probabilities' column of "spam", as /predict/spam reads it


def token_spans(text: str, encoder: BagOfWords) -> tuple[str, list[tuple[str, int, int]]]:
    """The text with each unit the encoder reads (a token; from spam v4 also a whole link, phone
    number or amount) and its [start, end) in it, in reading order.

    Offsets count code points of the returned text: the text itself, unless lowercasing changed
    its length (a few characters, such as U+0130, lowercase to two), in which case the lowercased
    text, where the tokenizer found them. Each unit is looked up after the previous one: the
    characters the tokenizer skipped cannot start a unit, so the first match is the unit.
    """
    lowered = text.lower()
    spans = []
    end = 0
    for token in encoder.tokenize(text):
        start = lowered.index(token, end)
        end = start + len(token)
        spans.append((token, start, end))
    return (text if len(lowered) == len(text) else lowered), spans


def log_odds(probabilities: np.ndarray) -> list[float | None]:
    """ln(p_spam) - ln(p_ham) of each row, in float64 from the graph's float32 probabilities: the
    logit of the softmax, accurate while the smaller probability is above float32's smallest
    (a logit under about 100); None past that, where no finite number is right."""
    ham = probabilities[:, 1 - SPAM_COLUMN].astype(np.float64)
    spam = probabilities[:, SPAM_COLUMN].astype(np.float64)
    return [math.log(s) - math.log(h) if s > 0 and h > 0 else None for s, h in zip(spam, ham, strict=True)]


def _ranked(effects: dict[str, dict[str, float | None]], sign: int) -> list[dict[str, Any]]:
    def strength(effect: dict[str, float | None]) -> float:
        value = effect["log_odds_effect"]
        return sign * (value if value is not None else effect["effect"] or 0.0)

    pushing = [(word, effect) for word, effect in effects.items() if strength(effect) > 0]
    pushing.sort(key=lambda item: -strength(item[1]))
    return [{"word": word, **effect} for word, effect in pushing[:TOP_WORDS]]


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else before - after


async def explain(
    dataplane: DataPlane,
    model: ServingModel,
    encoder: BagOfWords,
    raw: EmailText,
    row: np.ndarray,
    max_words: int,
    threshold: float,
    test_pattern: str | None = None,
) -> dict[str, Any]:
    """`raw` is the email as read_email read it, `row` as the route encoded it from `raw`;
    `test_pattern` the pattern the text as sent holds."""
    text, spans = token_spans(email_text(raw), encoder)
    present = encoder.present(row)
    in_row = set(present)
    in_text = dict.fromkeys(token for token, _, _ in spans)
    made = {unit: encoder.unit_ids(unit) & in_row for unit in in_text}
    makers = Counter(i for ids in made.values() for i in ids)
    # Entries of the bag with a name but no place of their own ("<headers>", the shapes, what a
    # link is) are examined alone, then the text's units in reading order, each taken out with
    # the entries only it made: the bag of words of the text without the unit.
    placeless = {
        encoder.vocabulary[i]: i
        for i in present
        if i < len(encoder.vocabulary) and encoder.vocabulary[i].startswith("<")
    }
    known = list(placeless) + [unit for unit in in_text if encoder.known(unit)]
    examined = [] if test_pattern else known[:max_words]
    removed = [
        [i for i in made[word] if makers[i] == 1] if word in in_text else [placeless[word]]
        for word in examined
    ]
    # The text as sent runs alone, as /predict/spam runs it, so both give the same probability to
    # the last bit (onnxruntime may sum a batch of several rows in another order).
    outputs = [(await dataplane.run(model, encoder.feeds([row])))[0]]
    if examined:
        ablations = encoder.ablations(row, removed)
        outputs.append((await dataplane.run(model, ablations))[0])
    rows = np.concatenate(outputs)
    probabilities = rows[:, SPAM_COLUMN].tolist()
    logits = log_odds(rows)
    effects = {
        word: {"effect": probabilities[0] - p, "log_odds_effect": _difference(logits[0], logit)}
        for word, p, logit in zip(examined, probabilities[1:], logits[1:], strict=True)
    }
    capped = len(known) > len(examined) and not test_pattern
    known_units = set(known)
    verdict: dict[str, Any] = {"spam": probabilities[0] >= threshold, "probability": probabilities[0]}
    note = None
    if test_pattern:
        verdict = {"spam": True, "probability": 1.0, "test_pattern": test_pattern}
        note = f"the text holds the {test_pattern} test pattern, so it is spam whatever its words"
    elif capped:
        note = (
            f"examined the first {len(examined)} of {len(known)} known words, in reading order "
            f"(NNSERVE_EXPLAIN_MAX_WORDS)"
        )
    return {
        **verdict,
        "log_odds": None if test_pattern else logits[0],
        "threshold": threshold,
        "spam_ward": _ranked(effects, +1),
        "ham_ward": _ranked(effects, -1),
        "known_words": len(known),
        "examined": len(examined),
        "capped": capped,
        "note": note,
        "text": text,
        "tokens": [
            {
                "token": token,
                "start": start,
                "end": end,
                "known": token in known_units,
                **effects.get(token, {"effect": None, "log_odds_effect": None}),
            }
            for token, start, end in spans
        ],
    }

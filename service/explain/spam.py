"""Why the spam network calls an email spam or ham: the words that moved it, exactly.

The model reads a binary bag of words, so a word's effect is the probability with the email as
sent minus the probability with every occurrence of that word gone: one network row per known
word present, all in one call. Positive effects pushed toward spam, negative toward ham. Entries
of the bag that no word of the text makes (spam v2's "<headers>": the email came with a header
block) are examined first, then the words in reading order; past `max_words` the rest are not
examined, and the answer says so. The tokens come back with their places in the text the model
read (subject and body, no headers), so a client can highlight them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.dataplane import DataPlane
from service.features import BagOfWords, email_text, tokenize
from service.loading import ServingModel

TOP_WORDS = 10
SPAM_COLUMN = 1  # the probabilities' column of "spam", as /predict/spam reads it


def token_spans(text: str) -> tuple[str, list[tuple[str, int, int]]]:
    """The text with each token's [start, end) in it, in reading order.

    Offsets count code points of the returned text: the text itself, unless lowercasing changed
    its length (a few characters, such as U+0130, lowercase to two), in which case the lowercased
    text, where the tokenizer found them. Each token is looked up after the previous one: the
    characters the tokenizer skipped cannot start a token, so the first match is the token.
    """
    lowered = text.lower()
    spans = []
    end = 0
    for token in tokenize(text):
        start = lowered.index(token, end)
        end = start + len(token)
        spans.append((token, start, end))
    return (text if len(lowered) == len(text) else lowered), spans


def _ranked(effects: dict[str, float], sign: int) -> list[dict[str, Any]]:
    pushing = [(word, effect) for word, effect in effects.items() if sign * effect > 0]
    pushing.sort(key=lambda item: -sign * item[1])
    return [{"word": word, "effect": effect} for word, effect in pushing[:TOP_WORDS]]


async def explain(
    dataplane: DataPlane,
    model: ServingModel,
    encoder: BagOfWords,
    raw: str,
    bag: np.ndarray,
    max_words: int,
    threshold: float,
) -> dict[str, Any]:
    """`bag` is the email's bag of words as the route encoded it from `raw`."""
    text, spans = token_spans(email_text(raw))
    present = {encoder.vocabulary[i]: i for i in np.flatnonzero(bag).tolist()}
    in_text = dict.fromkeys(token for token, _, _ in spans)
    known = [word for word in present if word not in in_text] + [word for word in in_text if word in present]
    examined = known[:max_words]
    rows = np.repeat(bag[np.newaxis], 1 + len(examined), axis=0)
    rows[np.arange(1, len(rows)), [present[word] for word in examined]] = 0.0
    outputs = await dataplane.run(model, {model.card.inputs[0].name: rows})
    probabilities = outputs[0][:, SPAM_COLUMN].tolist()
    effects = {word: probabilities[0] - p for word, p in zip(examined, probabilities[1:], strict=True)}
    capped = len(known) > len(examined)
    return {
        "spam": probabilities[0] >= threshold,
        "probability": probabilities[0],
        "threshold": threshold,
        "spam_ward": _ranked(effects, +1),
        "ham_ward": _ranked(effects, -1),
        "known_words": len(known),
        "examined": len(examined),
        "capped": capped,
        "note": (
            f"examined the first {len(examined)} of {len(known)} known words, in reading order "
            f"(NNSERVE_EXPLAIN_MAX_WORDS)"
        )
        if capped
        else None,
        "text": text,
        "tokens": [
            {
                "token": token,
                "start": start,
                "end": end,
                "known": token in present,
                "effect": effects.get(token),
            }
            for token, start, end in spans
        ],
    }

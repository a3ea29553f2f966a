"""The spam recipe: SpamAssassin emails in the shapes people send them (the whole message, its
body alone, short excerpts), a binary bag of words, an MLP with a softmax, and a temperature and a
decision threshold chosen on a validation split."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.card import BagOfWordsVocabulary, TensorSpec
from service.features import BagOfWords, email_tokens, tokenize
from service.features.spam import EmailText, read_email
from training import data
from training.export import Trained
from training.fit import FitConfig, fit, make_deterministic, predict
from training.nets import WithSoftmax, spam_net
from training.recipes.common import MAX_SAMPLE_CHARS, determinism, spread
from training.recipes.metrics import (
    binary_metrics,
    choose_threshold,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    roc_auc,
    softmax,
)

SHORT_MESSAGES = Path(__file__).resolve().parents[2] / "tests" / "data" / "short_messages.json"
EXCERPT_WORDS = (5, 40)  # training excerpts: the first 5 to 40 words of a body, or a window of them
VIEW_WORDS = 30  # the evaluation view "first 30 words of the body"
SHORT_VIEW_WORDS = 10  # validation only: a stand-in for the shortest messages
# The most ham each validation view may call spam: issue 11's limits for the test views (3% for
# bodies, 5% for the first 30 words) less a point or two for a validation split of 700 emails;
# 1% for whole messages, as v1 had. The 10-word view stands for the shortest messages.
HAM_FPR_TARGETS = {
    "full email": 0.01,
    "body only": 0.02,
    f"first {VIEW_WORDS} words of the body": 0.03,
    f"first {SHORT_VIEW_WORDS} words of the body": 0.03,
}
# Hard ham (commercial mail people asked for, 1 training email in 20) is where v1 erred most: each
# such email is seen this many times, each time with other random excerpts.
HARD_HAM_COPIES = 3
DROPOUT = 0.5


def build_vocabulary(token_sets: list[set[str]], size: int) -> list[str]:
    """The `size` tokens found in the most training emails (ties alphabetical, so the vocabulary
    is the same on every run)."""
    frequency = Counter(token for tokens in token_sets for token in tokens)
    ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))
    return [token for token, count in ranked[:size] if count >= 2]


def first_words(text: str, count: int) -> str:
    return " ".join(text.split()[:count])


def training_texts(raw: bytes, parsed: EmailText, rng: np.random.Generator) -> list[str | bytes]:
    """One email in the shapes the service receives: the raw message, twice (whole messages are
    the main use and held their own against v1 only so weighted); the body alone, as pasted; the
    subject over the start of the body (a preview); the first 5-40 words, twice; and 5-40 words
    from anywhere in it (a forwarded fragment). Subject plus the whole body is not among them
    because it is the raw message's own bag of words (only the subject and text parts count).
    """
    low, high = EXCERPT_WORDS
    words = parsed.body.split()
    first = [" ".join(words[:k]) for k in rng.integers(low, high + 1, 3)]
    size = int(rng.integers(low, high + 1))
    start = int(rng.integers(0, max(1, len(words) - size + 1)))
    window = " ".join(words[start : start + size])
    return [raw, raw, parsed.body, f"{parsed.subject}\n{first[0]}", first[1], first[2], window]


@dataclass
class View:
    """One way of presenting held-out emails: the texts as a client would send them, encoded."""

    texts: list[str | bytes]
    x: np.ndarray
    truth: np.ndarray
    positions: list[int]


def _view(encoder: BagOfWords, items: list[tuple[int, str | bytes, bool]]) -> View:
    """A body whose text has no word at all is left out (an image-only spam has no body to show);
    a raw message always counts, as the service would classify it by its subject alone."""
    kept = [(i, text, spam) for i, text, spam in items if isinstance(text, bytes) or tokenize(text)]
    return View(
        texts=[text for _, text, _ in kept],
        x=np.stack([encoder.encode(text) for _, text, _ in kept]),
        truth=np.array([spam for _, _, spam in kept], dtype=bool),
        positions=[i for i, _, _ in kept],
    )


def held_out_views(
    emails: list[data.Email],
    parsed: list[EmailText],
    positions: list[int],
    encoder: BagOfWords,
    shortest: bool = False,
) -> dict[str, View]:
    views: dict[str, list[tuple[int, str | bytes, bool]]] = {
        "full email": [(i, emails[i].raw, emails[i].spam) for i in positions],
        "body only": [(i, parsed[i].body, emails[i].spam) for i in positions],
        f"first {VIEW_WORDS} words of the body": [
            (i, first_words(parsed[i].body, VIEW_WORDS), emails[i].spam) for i in positions
        ],
    }
    if shortest:
        views[f"first {SHORT_VIEW_WORDS} words of the body"] = [
            (i, first_words(parsed[i].body, SHORT_VIEW_WORDS), emails[i].spam) for i in positions
        ]
    return {name: _view(encoder, items) for name, items in views.items()}


def short_message_view(path: Path, encoder: BagOfWords) -> View:
    items = json.loads(path.read_text())["items"]
    return _view(encoder, [(n, item["text"], item["label"] == "spam") for n, item in enumerate(items)])


@contextmanager
def _one_thread() -> Iterator[None]:
    """This net's steps are small (64 rows through a 10,000 x 64 layer), so a second thread only
    adds hand-offs; on the shared 2-core build machine one thread ran a step in 9 ms and two in
    150 ms. The previous count is restored for the recipes that follow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _spam_probability(net: nn.Module, x: np.ndarray) -> np.ndarray:
    return softmax(predict(net, x))[:, 1]


def _fold_temperature(net: nn.Sequential, temperature: float) -> None:
    """softmax(logits / T) computed by the graph itself: the last layer's weights and bias are
    divided by T, so the served model costs nothing more and the service needs no new step."""
    last = net[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.div_(temperature)
        last.bias.div_(temperature)


def known_limits(short: dict[str, Any], short_items: int) -> list[str]:
    ham = short["confusion"][0][0] + short["confusion"][0][1]
    return [
        "It learnt from the SpamAssassin corpus, English email from around 2002, whose ham is "
        "mostly mailing-list discussion. Everyday ham written in a service voice (receipts, "
        "bookings, reminders, notifications: 'your order', 'call us', '$') reads like that "
        f"corpus's spam: of the {short_items} short messages written for evaluation it called "
        f"{short['ham_called_spam']} of {ham} ham spam (listed under the view's errors in card.json).",
        "It reads words only: not links, senders, attachments or images, so an image-only spam "
        "with a bland subject passes.",
        "The fewer words a text has, the less it can tell: the first 30 words of a body are "
        "judged less surely than the whole message (see the views).",
        "Commercial mail that people asked for (newsletters, offers from shops they use) is where "
        "it calls ham spam most often in the corpus.",
        "The probabilities are calibrated on held-out corpus email; on text unlike the corpus "
        "they can be confidently wrong.",
    ]


def train_spam(
    config: FitConfig,
    vocabulary_size: int = 10_000,
    cache: Path | None = None,
    test_share: float = 0.2,
    validation_share: float = 0.15,
    subset: int | None = None,
    short_messages: Path = SHORT_MESSAGES,
) -> Trained:
    with _one_thread():
        return _train_spam(
            config, vocabulary_size, cache, test_share, validation_share, subset, short_messages
        )


def _training_rows(
    emails: list[data.Email], parsed: list[EmailText], positions: list[int], encoder: BagOfWords, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every training text with its email's label; a text with no vocabulary word is left out,
    since all it could teach is which label an empty input gets."""
    rng = np.random.default_rng(seed)
    vectors, labels = [], []
    for i in positions:
        copies = HARD_HAM_COPIES if emails[i].folder == "hard-ham-1" else 1
        for text in (t for _ in range(copies) for t in training_texts(emails[i].raw, parsed[i], rng)):
            vector = encoder.encode(text)
            if vector.any():
                vectors.append(vector)
                labels.append(emails[i].spam)
    return np.stack(vectors), np.array(labels, dtype=np.int64)


def _scored(probability: np.ndarray, view: View, threshold: float) -> dict[str, Any]:
    return {"items": len(view.truth)} | binary_metrics(probability, view.truth, threshold)


def _short_message_figures(probability: np.ndarray, view: View, threshold: float) -> dict[str, Any]:
    called = probability >= threshold
    return _scored(probability, view, threshold) | {
        "ham_called_spam": int(called[~view.truth].sum()),
        "spam_missed": int((~called[view.truth]).sum()),
        "errors": [
            {"text": text, "label": "spam" if truth else "ham", "probability": round(float(p), 4)}
            for text, truth, p, spam in zip(view.texts, view.truth, probability, called, strict=True)
            if spam != truth
        ],
    }


def _train_spam(
    config: FitConfig,
    vocabulary_size: int,
    cache: Path | None,
    test_share: float,
    validation_share: float,
    subset: int | None,
    short_messages: Path,
) -> Trained:
    emails = data.load_spam(cache)
    parsed = [read_email(email.raw) for email in emails]
    train_idx, test_idx = data.split_spam(emails, test_share, config.seed)
    fit_idx, validation_idx = data.split_spam(emails, validation_share, config.seed + 1, train_idx)
    fit_idx = data.subsample(fit_idx, subset, config.seed)
    vocabulary = build_vocabulary([email_tokens(emails[i].raw) for i in fit_idx], vocabulary_size)
    encoder = BagOfWords(vocabulary)
    x_train, y_train = _training_rows(emails, parsed, fit_idx, encoder, config.seed)
    validation = held_out_views(emails, parsed, validation_idx, encoder, shortest=True)
    test = held_out_views(emails, parsed, test_idx, encoder)
    short = short_message_view(short_messages, encoder)
    x_validation = np.concatenate([view.x for view in validation.values()])
    y_validation = np.concatenate([view.truth for view in validation.values()])
    x_test = np.concatenate([view.x for view in test.values()])
    y_test = np.concatenate([view.truth for view in test.values()])

    def build() -> nn.Module:
        return spam_net(len(vocabulary), dropout=DROPOUT)

    make_deterministic(config.seed)
    net = build()
    loss = nn.CrossEntropyLoss()

    def auc(model: nn.Module) -> float:
        return roc_auc(_spam_probability(model, x_validation), y_validation)

    history = fit(net, x_train, y_train, loss, config, auc, "validation ROC-AUC", label="spam")

    logits = predict(net, x_validation)
    temperature = fit_temperature(logits, y_validation.astype(np.int64))
    uncalibrated = _spam_probability(net, x_test)
    _fold_temperature(net, temperature)  # type: ignore[arg-type]  # WithSoftmax's inner net is the Sequential
    validation_probability = {name: _spam_probability(net, view.x) for name, view in validation.items()}
    threshold = choose_threshold(
        {name: (validation_probability[name], view.truth) for name, view in validation.items()},
        HAM_FPR_TARGETS,
    )
    calibrated = _spam_probability(net, x_test)
    views = {name: _scored(_spam_probability(net, view.x), view, threshold) for name, view in test.items()}
    short_name = f"short messages ({'/'.join(short_messages.parts[-3:])})"
    views[short_name] = _short_message_figures(_spam_probability(net, short.x), short, threshold)
    full = test["full email"]
    hard = np.array([emails[i].folder == "hard-ham-1" for i in full.positions])
    full_called = _spam_probability(net, full.x) >= threshold
    metrics = {key: value for key, value in views["full email"].items() if key != "items"} | {
        "threshold": threshold,
        "hard_ham_false_positive_rate": float(full_called[hard].mean()),
        "hard_ham_count": int(hard.sum()),
        "held_out_count": len(test_idx),
        "vocabulary_size": len(vocabulary),
    }
    labels = y_validation.astype(np.int64)
    test_texts = [text for view in test.values() for text in view.texts]
    sendable = [row for row, text in enumerate(test_texts) if _as_sent(text) is not None]
    wordless = [email.path for email in emails if not data.has_text_body(email.raw)]
    return Trained(
        name="spam",
        net=WithSoftmax(net),
        input=TensorSpec(name="bag_of_words", dtype="float32", shape=[-1, len(vocabulary)]),
        output=TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
        task="binary_classification",
        labels=["ham", "spam"],
        preprocessing=BagOfWordsVocabulary(vocabulary=vocabulary),
        x_test=x_test,
        metrics=metrics,
        baseline={"model": "always ham", "accuracy": float(1 - full.truth.mean())},
        threshold=threshold,
        views=views,
        known_limits=known_limits(views[short_name], len(short.truth)),
        sections={
            "decision_threshold": {
                "threshold": threshold,
                "rule": "the most accurate threshold on the validation views together, among "
                "those calling no more ham spam in each view than its target",
                "validation_ham_false_positive_rate_targets": HAM_FPR_TARGETS,
                "validation_emails": len(validation_idx),
                "validation_ham_false_positive_rate": {
                    name: float((p[~validation[name].truth] >= threshold).mean())
                    for name, p in validation_probability.items()
                },
                "served": "a text is spam when its probability is at least this threshold, "
                "unless NNSERVE_SPAM_THRESHOLD overrides it",
            },
            "calibration": {
                "method": "temperature scaling on the validation views, folded into the last layer",
                "temperature": temperature,
                "validation_nll_before": negative_log_likelihood(logits, labels),
                "validation_nll_after": negative_log_likelihood(logits / temperature, labels),
                "test_brier_before": float(np.mean((uncalibrated - y_test) ** 2)),
                "test_brier_after": float(np.mean((calibrated - y_test) ** 2)),
                "reliability_on": "the test split's three views together, after calibration",
                "reliability": reliability(calibrated, y_test),
            },
        },
        data={
            "source": f"npm {data.SPAM_ASSASSIN.spec} (SpamAssassin public corpus, .txt raw bytes)",
            "sha512": data.SPAM_ASSASSIN.integrity,
            "messages_after_dedup": len(emails),
            "train_count": len(fit_idx),
            "validation_count": len(validation_idx),
            "training_rows": len(x_train),
            "training_views": "each training email as: the raw message (twice); its body alone; its "
            "subject over its first 5-40 words; its first 5-40 words (twice, "
            "two lengths); 5-40 words from anywhere in its body. All with the "
            "email's label; texts without a vocabulary word are dropped. Hard "
            f"ham emails {HARD_HAM_COPIES} times, with other excerpts each time.",
            "dedup": "by id and by a hash of the extracted subject and body text",
            "no_text_body": {
                "policy": "kept in training and in the full-email view, classified from their "
                "subject alone; left out of the body views, which would be empty",
                "count": len(wordless),
                "files": wordless,
            },
            "held_out": {"files": [emails[i].path for i in test_idx], "split_seed": config.seed},
            "validation": {"files": [emails[i].path for i in validation_idx], "split_seed": config.seed + 1},
            "short_messages": f"{'/'.join(short_messages.parts[-3:])}: "
            f"{len(short.truth)} messages written for evaluation, never trained on",
        },
        training={
            **asdict(config),
            "loss": "cross-entropy",
            "torch_threads": 1,
            "determinism": determinism(build, x_train, y_train, loss, config, x_test),
        },
        history=history,
        samples=[
            {
                "input": {"text": _as_sent(test_texts[row])},
                "label": "spam" if y_test[row] else "ham",
                "row": row,
            }
            for row in spread(sendable)
        ],
        notes=[
            "Spam or ham for an email, a body or a short message: a binary bag of words over the "
            "most frequent training tokens, Dense 64 ReLU, Dense 64 ReLU, softmax. Trained on "
            "every training email whole, as its body alone and as short excerpts, so a text "
            "without headers is judged as such; the probability is calibrated and the decision "
            "threshold chosen on a validation split."
        ],
    )


def _as_sent(text: str | bytes) -> str | None:
    """The text as a client would send it in JSON, if it can be (13 of the corpus's raw messages
    are not UTF-8; they are left out of the samples only, not out of training)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return text if len(text) <= MAX_SAMPLE_CHARS else None

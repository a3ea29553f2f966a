"""Held-out metrics computed with numpy alone, so a card's figures can be recomputed without torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def binary_metrics(
    probability: np.ndarray, truth: np.ndarray, threshold: float | np.ndarray = 0.5
) -> dict[str, Any]:
    """The figures of a binary classifier at one threshold (or one per item); `confusion` is
    [[TN, FP], [FN, TP]] (rows true ham, spam; columns predicted ham, spam)."""
    predicted = probability >= threshold
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    tn = int((~predicted & ~truth).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {
        "accuracy": float((predicted == truth).mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "roc_auc": roc_auc(probability, truth),
        "ham_false_positive_rate": fp / max(fp + tn, 1),
        "brier": brier(probability, truth),
        "confusion": [[tn, fp], [fn, tp]],
    }


def roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def brier(probability: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared distance between the probability and the outcome (0 is perfect, 0.25 is a
    constant 0.5): it rewards probabilities that mean what they say, not only the right side."""
    return float(np.mean((probability - truth) ** 2))


def reliability(probability: np.ndarray, truth: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """The reliability table: in each probability bin, how many items fell there, the mean
    predicted probability and the share that truly were positive (they match when calibrated)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        rows.append(
            {
                "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                "items": count,
                "mean_probability": round(float(probability[members].mean()), 4) if count else None,
                "observed_positive_share": round(float(truth[members].mean()), 4) if count else None,
            }
        )
    return rows


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probability = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probability[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling: the T > 0 whose softmax(logits / T) has the least negative log
    likelihood, searched on a fine logarithmic grid (one parameter, so a grid is exact enough
    and needs no optimiser). It moves probabilities, never the order of the items."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 801))
    losses = [negative_log_likelihood(logits / t, labels) for t in grid]
    return float(grid[int(np.argmin(losses))])


def choose_threshold(views: dict[str, tuple[np.ndarray, np.ndarray]], fpr_targets: dict[str, float]) -> float:
    """The most accurate threshold (over every view's items together) among those whose ham
    false-positive rate is at most the view's target in each view; ties go to the lowest.

    Candidates are the midpoints between neighbouring distinct probabilities, so the threshold
    never sits on an item and a run on other hardware with the same ranking picks the same split.
    """
    probability = np.concatenate([p for p, _ in views.values()])
    truth = np.concatenate([t for _, t in views.values()])
    distinct = np.unique(probability)
    candidates = np.concatenate([[0.5], (distinct[1:] + distinct[:-1]) / 2])
    allowed = [
        t
        for t in candidates
        if all((p[~y] >= t).mean() <= fpr_targets[name] for name, (p, y) in views.items())
    ] or [float(candidates.max())]  # none meets the target: the strictest there is
    accuracy = [((probability >= t) == truth).mean() for t in allowed]
    best = max(accuracy)
    return float(min(t for t, a in zip(allowed, accuracy, strict=True) if a == best))

"""What every recipe shares: picking the samples the parity tests replay, and the determinism check."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from torch import nn

from training.fit import FitConfig, Inputs, fit, make_deterministic, predict

SAMPLES = 200
MAX_SAMPLE_CHARS = 100_000
WRONG_SAMPLES = 40
"""At most this many of the held-out items the model gets wrong (a regression: its largest errors)."""
UNSURE_SAMPLES = 40
"""The held-out items the model is least sure of, among those it gets right."""


def spread(rows: list[int], count: int = SAMPLES) -> list[int]:
    """`count` rows evenly spread over the held-out split, which is sorted by folder or label:
    the first rows alone would all be one class."""
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def answers(
    outputs: np.ndarray, task: str, threshold: float | np.ndarray = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's answer and how sure the model is of it: for a binary classifier, whether the
    second class's probability reaches `threshold` (one, or one per item) and its distance from
    it; for several classes, the likeliest one and its lead over the runner-up."""
    if task == "binary_classification":
        return outputs[:, 1] >= threshold, np.abs(outputs[:, 1] - threshold)
    ranked = np.sort(outputs, axis=1)
    return outputs.argmax(axis=1), ranked[:, -1] - ranked[:, -2]


def honest(
    outputs: np.ndarray,
    labels: np.ndarray,
    task: str,
    candidates: list[int],
    count: int = SAMPLES,
    threshold: float | np.ndarray = 0.5,
) -> dict[int, str]:
    """Rows for samples.json, each with why it was picked: the held-out items the model gets wrong
    (up to WRONG_SAMPLES, the surest mistakes first; a regression's largest errors), then the ones
    it is least sure of among those it gets right (UNSURE_SAMPLES), then an even spread of the
    rest. Only `candidates` (the items a client can send) are picked. Parity tests that replayed
    confident right answers alone would never see the model's hard cases."""
    if task == "regression":
        error = np.abs(outputs[:, 0] - labels)
        wrong = sorted(candidates, key=lambda row: -error[row])[:WRONG_SAMPLES]
        unsure: list[int] = []
    else:
        predicted, sureness = answers(outputs, task, threshold)
        right = predicted == labels
        wrong = sorted((r for r in candidates if not right[r]), key=lambda row: -sureness[row])[
            :WRONG_SAMPLES
        ]
        unsure = sorted((r for r in candidates if right[r]), key=lambda row: sureness[row])[:UNSURE_SAMPLES]
    why = {row: "wrong" for row in wrong} | {row: "unsure" for row in unsure}
    rest = [row for row in candidates if row not in why]
    if count > len(why):
        why |= {row: "spread" for row in spread(rest, count - len(why))}
    return dict(sorted(why.items()))


def determinism(
    build: Any, x: Inputs, y: np.ndarray, loss: nn.Module, config: FitConfig, probe: Inputs
) -> dict[str, Any]:
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

"""Held-out samples the training pipeline wrote beside each committed model.

`models/<name>/<version>/samples.json` holds raw held-out inputs exactly as a client sends them,
their true labels, and the outputs the training pipeline's ONNX evaluation computed for them. The
tests send the raw inputs to the running service and compare, which proves there is no
train/serve skew without needing the training data on the test machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from support.server import MODELS_DIR


@dataclass(frozen=True)
class Sample:
    input: dict[str, Any]
    label: Any
    output: list[float]
    kind: str | None = None  # spam v4 on: the kind of text training judged it as, which picks its threshold


@cache
def versions(name: str) -> tuple[int, ...]:
    """Every committed version of a model, oldest first."""
    return tuple(sorted(int(p.name) for p in (MODELS_DIR / name).iterdir() if p.name.isdigit()))


def latest_version(name: str) -> int:
    return versions(name)[-1]


@cache
def samples(name: str, version: int | None = None) -> tuple[Sample, ...]:
    """The held-out samples of one version (the latest by default)."""
    path = MODELS_DIR / name / str(version or latest_version(name)) / "samples.json"
    items = json.loads(path.read_text())["items"]
    return tuple(Sample(i["input"], i["label"], i["output"], i.get("kind")) for i in items)

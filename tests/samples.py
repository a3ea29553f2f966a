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

from conftest import MODELS_DIR


@dataclass(frozen=True)
class Sample:
    input: dict[str, Any]
    label: Any
    output: list[float]


@cache
def latest_version(name: str) -> int:
    return max(int(p.name) for p in (MODELS_DIR / name).iterdir() if p.name.isdigit())


@cache
def samples(name: str) -> tuple[Sample, ...]:
    path = MODELS_DIR / name / str(latest_version(name)) / "samples.json"
    items = json.loads(path.read_text())["items"]
    return tuple(Sample(i["input"], i["label"], i["output"]) for i in items)

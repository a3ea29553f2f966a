"""The model repository: every `models/<name>/<version>/` folder, loaded, checked and warmed.

Loading is where all per-model work happens (session, lookup tables, warm-up), so that serving a
request does none of it. A version that fails to load is kept with its reason, for /ready and for
the 503 its endpoint answers; it never stops the other models from serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import (
    MODEL_FILE,
    BagOfWordsVocabulary,
    GuestRoster,
    ModelCard,
    TensorSpec,
)
from service.errors import ApiError
from service.features import BagOfWords, GuestEncoder
from service.runner import ModelRunner

log = logging.getLogger("nnserve")

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


class ModelLoadError(Exception):
    """Why a model version cannot serve; shown verbatim by /ready."""


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    card: ModelCard | None = None
    runner: ModelRunner | None = None
    encoder: GuestEncoder | BagOfWords | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.runner is not None


@dataclass
class ModelEntry:
    """All versions of one model, keyed by version number."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def latest_ready(self) -> ModelVersion | None:
        ready = [v for v in self.versions.values() if v.ready]
        return max(ready, key=lambda v: v.version) if ready else None


def _graph_specs(args: list[ort.NodeArg]) -> list[TensorSpec]:
    specs = []
    for arg in args:
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is None:
            raise ModelLoadError(f"tensor {arg.name!r} has unsupported type {arg.type}")
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        specs.append(TensorSpec(name=arg.name, dtype=dtype, shape=shape))
    return specs


def _check_matches(kind: str, card_specs: list[TensorSpec], graph_specs: list[TensorSpec]) -> None:
    if card_specs != graph_specs:
        raise ModelLoadError(
            f"card {kind} {[s.model_dump() for s in card_specs]} do not match the graph's "
            f"{[s.model_dump() for s in graph_specs]}"
        )


def _encoder_for(card: ModelCard) -> GuestEncoder | BagOfWords | None:
    prep = card.preprocessing
    width = card.inputs[0].shape[-1]
    if isinstance(prep, GuestRoster):
        size, encoder = len(prep.roster), GuestEncoder(prep.roster)
    elif isinstance(prep, BagOfWordsVocabulary):
        size, encoder = len(prep.vocabulary), BagOfWords(prep.vocabulary)
    else:
        return None
    if size != width:
        raise ModelLoadError(f"card's {prep.kind} has {size} entries but the input is {width} wide")
    return encoder


def _warm_up(runner: ModelRunner, card: ModelCard) -> None:
    """One real inference, so the first client does not pay for lazy initialisation, and a graph
    whose outputs are not what the card promises is caught before it serves."""
    feeds = {
        spec.name: np.zeros([1 if d == -1 else d for d in spec.shape], dtype=spec.dtype)
        for spec in card.inputs
    }
    outputs = runner.run_sync(feeds)
    for spec, out in zip(card.outputs, outputs, strict=True):
        fits = len(out.shape) == len(spec.shape) and out.shape[:1] == (1,) and all(
            want in (-1, got) for want, got in zip(spec.shape[1:], out.shape[1:], strict=True)
        )
        if not fits:
            raise ModelLoadError(
                f"output {spec.name!r} has shape {list(out.shape)} on warm-up; card says {spec.shape}"
            )


class ModelRepository:
    def __init__(
        self,
        root: Path,
        *,
        intra_op_threads: int,
        make_runner: Callable[[ort.InferenceSession, str, int], ModelRunner],
    ) -> None:
        self.root = root
        self._intra_op_threads = intra_op_threads
        self._make_runner = make_runner
        self.models: dict[str, ModelEntry] = {}
        self._changing = asyncio.Lock()

    def load_all(self) -> None:
        """(Re)scans the repository; a fresh dict is swapped in whole, so readers never see half."""
        models: dict[str, ModelEntry] = {}
        for model_dir in sorted(p for p in self.root.glob("*") if p.is_dir()):
            entry = self.scan(model_dir.name)
            if entry is not None:
                models[entry.name] = entry
        if not models:
            log.warning("no models found under %s", self.root.resolve())
        self.models = models

    def scan(self, name: str) -> ModelEntry | None:
        """Loads and warms every version in models/<name>/ without touching what is serving;
        None if the folder holds no version. Slow (sessions are built): call it off the loop."""
        model_dir = self.root / name
        if not _MODEL_NAME.fullmatch(name) or not model_dir.is_dir():
            return None
        versions = sorted(
            (int(p.name), p) for p in model_dir.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()
        )
        if not versions:
            return None
        entry = ModelEntry(name)
        for number, path in versions:
            entry.versions[number] = self.load_version(name, number, path)
        return entry

    async def load(self, name: str) -> ModelEntry | None:
        """Rescans models/<name>/ in a worker thread, so serving goes on meanwhile, then swaps the
        result in; None (and nothing changed) if the folder holds no version. Loads and unloads
        take turns, so two operators' changes apply in the order they were asked for."""
        async with self._changing:
            entry = await asyncio.to_thread(self.scan, name)
            if entry is not None:
                self.swap(name, entry)
            return entry

    async def unload(self, name: str) -> bool:
        """Stops serving a model (in-flight requests finish); False if it was not loaded."""
        async with self._changing:
            if name not in self.models:
                return False
            self.swap(name, None)
            return True

    def swap(self, name: str, entry: ModelEntry | None) -> None:
        """Puts a scanned model in place (or removes it) in one assignment: requests already
        holding the old version finish on it, new ones get the new."""
        models = {k: v for k, v in self.models.items() if k != name}
        if entry is not None:
            models[name] = entry
        self.models = dict(sorted(models.items()))

    def load_version(self, name: str, version: int, path: Path) -> ModelVersion:
        model = ModelVersion(name, version, path)
        try:
            model.card = ModelCard.read(path)
            if model.card.name != name or model.card.version != version:
                raise ModelLoadError(
                    f"card names {model.card.name} v{model.card.version}, folder is {name}/{version}"
                )
            session = self._session(path / MODEL_FILE)
            _check_matches("inputs", model.card.inputs, _graph_specs(session.get_inputs()))
            _check_matches("outputs", model.card.outputs, _graph_specs(session.get_outputs()))
            model.encoder = _encoder_for(model.card)
            runner = self._make_runner(session, name, version)
            _warm_up(runner, model.card)
            model.runner = runner
            log.info("loaded model %s version %d from %s", name, version, path)
        except FileNotFoundError as exc:
            model.error = f"missing file: {Path(exc.filename or '').name or exc}"
        except (ModelLoadError, ValueError) as exc:
            model.error = str(exc).splitlines()[0]
        except Exception as exc:  # onnxruntime raises its own types for corrupt graphs
            model.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if model.error:
            log.error("model %s version %d failed to load: %s", name, version, model.error)
        return model

    def _session(self, path: Path) -> ort.InferenceSession:
        if not path.is_file():
            raise FileNotFoundError(2, "missing", str(path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested version, or the highest ready one; 404 if unknown, 503 if not ready."""
        entry = self.models.get(name)
        if entry is None:
            raise ApiError(404, "model_not_found", f"no model named {name!r}")
        if version is None:
            model = entry.latest_ready()
            if model is None:
                reasons = "; ".join(f"v{v.version}: {v.error}" for v in entry.versions.values())
                raise ApiError(503, "model_not_ready", f"model {name!r} is not ready ({reasons})")
            return model
        model = entry.versions.get(version)
        if model is None:
            raise ApiError(404, "model_not_found", f"model {name!r} has no version {version}")
        if not model.ready:
            raise ApiError(503, "model_not_ready", f"{name} v{version} is not ready: {model.error}")
        return model

    def ready(self) -> bool:
        """Every version found is loaded and warmed (and at least one model was found)."""
        return bool(self.models) and not self.failures()

    def failures(self) -> dict[str, str]:
        return {
            f"{v.name}/{v.version}": v.error or "not loaded"
            for entry in self.models.values()
            for v in entry.versions.values()
            if not v.ready
        }

"""The protocol-neutral data plane: every adapter (/predict/*, /v2/*, /models, /ready, gRPC) asks
it for a model and runs feeds through it, so all protocols share one rule for finding a model,
one for a bad version, one notion of ready, one description of a model, and one traffic policy
(canary weights and shadow versions, service/models/traffic.py).

Modelled on MLServer's handlers/dataplane.py under thin REST adapters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Counter

from service.card import GraphCard, ModelCard, TensorSpec
from service.deadline import DeadlineExceeded
from service.errors import (
    ApiError,
    InferenceFailed,
    InsufficientMemory,
    ModelNotFound,
    ModelNotReady,
    OutputTooLarge,
    Overloaded,
    TimedOut,
    quoted,
)
from service.features.spam import TextKind
from service.models import runner
from service.models.loading import ModelVersion, ServingModel
from service.models.repository import ModelEntry, ModelRepository
from service.models.runner import QueueFull
from service.models.shadow import Shadow, Shadowed, ShadowFeeds
from service.models.traffic import ModelTraffic, TrafficKey, check
from service.observability.metrics import TrafficMetrics
from service.observability.tracing import note_model

log = logging.getLogger("nnserve")

# Version folders are numbered with at most 9 digits (service/models/loading.py): a longer string names
# no version, and is never handed to int() (which refuses over 4,300 digits).
_MAX_VERSION_DIGITS = 9


@dataclass(frozen=True)
class ModelDescription:
    """What any protocol says about a model version: its tensors, and which card described it
    ("training": written by our training code; "small": a drop-in's optional card; "none": a
    drop-in described by its graph alone), with the small card's additions."""

    name: str
    version: int
    versions: list[int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    card: str
    description: str | None
    labels: list[str] | None

    def parameters(self) -> dict[str, Any]:
        """The card's kind and additions, as the Open Inference Protocol's `parameters`."""
        extra = {"description": self.description, "labels": self.labels}
        return {"card": self.card, **{k: v for k, v in extra.items() if v is not None}}


def card_kind(card: ModelCard | GraphCard) -> str:
    if isinstance(card, ModelCard):
        return "training"
    return "small" if card.written else "none"


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: TrafficMetrics,
        *,
        strict_readiness: bool,
        traffic: dict[str, ModelTraffic],
        shadow_queue_bytes: int,
        shadow_log_per_minute: int,
    ) -> None:
        """`traffic` is checked against the repository here: a policy it cannot follow (an
        unknown or unready version, say) raises TrafficError, which stops the start."""
        self.repository = repository
        self.strict_readiness = strict_readiness
        self._metrics = metrics
        self._served: dict[tuple[str, int], Counter] = {}
        self.traffic: dict[str, ModelTraffic] = {}
        for name, policy in traffic.items():
            check(name, policy, repository.models.get(name))
            self.traffic[name] = policy
        self._shadow = Shadow(
            self._ready_version, metrics, queue_bytes=shadow_queue_bytes, log_per_minute=shadow_log_per_minute
        )

    def entry(self, name: str) -> ModelEntry:
        entry = self.repository.models.get(name)
        if entry is None:
            raise ModelNotFound(f"no model named {quoted(name)}")
        return entry

    def model(self, name: str, version: str | None = None, key: TrafficKey | None = None) -> ServingModel:
        """The version asked for (a string, as every protocol receives it) or, without one, the
        version the traffic policy picks for this client key (see service/models/traffic.py), else the
        highest ready version that is not a shadow. 404 for an unknown model or version, 503
        for one that is not ready."""
        entry = self.entry(name)
        if version is None:
            serving = self._routed(entry, key)
            note_model(name, serving.version)
            return serving
        found = None
        if version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS:
            found = entry.versions.get(int(version))
        if found is None:
            raise ModelNotFound(f"model {quoted(name)} has no version {version[:20]!r}")
        if found.serving is None:
            raise ModelNotReady(f"{name} v{found.version} is not ready: {found.error}")
        note_model(name, found.version)
        return found.serving

    def _routed(self, entry: ModelEntry, key: TrafficKey | None) -> ServingModel:
        policy = self.traffic.get(entry.name)
        if policy is not None:
            picked = policy.pick(key)
            found = entry.versions.get(picked) if picked is not None else None
            if found is not None and found.serving is not None:
                return found.serving
        default = self.default_version(entry)
        if default is None or default.serving is None:
            reasons = "; ".join(f"v{v.version}: {v.error}" for v in entry.versions.values())
            raise ModelNotReady(f"model {entry.name!r} is not ready ({reasons})")
        return default.serving

    def default_version(self, entry: ModelEntry) -> ModelVersion | None:
        """The highest ready version but a shadow: a new version set up as a shadow is not
        promoted just because its folder has the highest number."""
        policy = self.traffic.get(entry.name)
        shadow = policy.shadow if policy else None
        ready = [v for v in entry.versions.values() if v.ready and v.version != shadow]
        return max(ready, key=lambda v: v.version) if ready else None

    def describe(self, model: ServingModel) -> ModelDescription:
        card = model.card
        written = card if isinstance(card, GraphCard) else None
        return ModelDescription(
            name=model.name,
            version=model.version,
            versions=sorted(self.entry(model.name).versions),
            inputs=card.inputs,
            outputs=card.outputs,
            card=card_kind(card),
            description=written.description if written else None,
            labels=card.labels,
        )

    def versions(self) -> list[ModelVersion]:
        """Every version of every model, ready or not, in name and version order."""
        return [
            version
            for entry in self.repository.models.values()
            for _, version in sorted(entry.versions.items())
        ]

    def ready(self) -> bool:
        """Strict (the default): every version found is loaded and warmed, and at least one model
        was found. Not strict (NNSERVE_STRICT_READINESS=false, Triton's --strict-readiness=false):
        at least one version serves, and the ones that failed are only reported."""
        versions = self.versions()
        if self.strict_readiness:
            return bool(versions) and all(v.ready for v in versions)
        return any(v.ready for v in versions)

    async def load(self, name: str) -> ModelEntry:
        """(Re)loads every version in models/<name>/ and swaps them in at once: the repository
        builds and warms the new sessions off the event loop, so serving never pauses. The
        model's traffic policy stays; a version it names that is gone or broken now gets no
        traffic (its requests go to the default version) until the policy is changed."""
        entry = await self.repository.load(name)
        if entry is None:
            raise ModelNotFound(f"no model folder with versions for {quoted(name)}")
        return entry

    async def unload(self, name: str) -> None:
        """Stops serving a model: it is unknown (404) until it is loaded again."""
        if not await self.repository.unload(name):
            raise ModelNotFound(f"no model named {quoted(name)}")

    def set_traffic(self, name: str, policy: ModelTraffic) -> None:
        """Replaces a model's traffic policy, once checked against what it serves now
        (TrafficError otherwise, and the old policy stays)."""
        check(name, policy, self.entry(name))
        traffic = {k: v for k, v in self.traffic.items() if k != name}
        if policy.weights or policy.shadow is not None:
            traffic[name] = policy
        self.traffic = dict(sorted(traffic.items()))
        log.info("traffic for %s is now %s", name, policy.describe())

    async def infer(
        self,
        model: ServingModel,
        feeds: dict[str, np.ndarray],
        shadow_feeds: ShadowFeeds | None = None,
        held_bytes: int = 0,
        kinds: tuple[TextKind, ...] | None = None,
        threshold: float | None = None,
    ) -> list[np.ndarray]:
        """Every output of the graph, in the card's order, for an inference a client asked for:
        counted by the version that answered, and handed to the model's shadow version if it has
        one (`shadow_feeds` prepares the inputs for it, holding `held_bytes` of the request until
        it runs; without it the shadow gets `feeds`; `kinds`: each row's kind of text, for the
        verdicts of cards that judge kinds apart; `threshold`: the operator's decision threshold,
        if the client's verdict used one, so that the shadow's verdict is judged alike)."""
        outputs = await model.runner.run(feeds)
        self._count(model)
        policy = self.traffic.get(model.name)
        if policy is not None and policy.shadow is not None and policy.shadow != model.version:
            size = held_bytes + sum(a.nbytes for a in feeds.values()) + sum(a.nbytes for a in outputs)
            shadowed = Shadowed(model, outputs, feeds, shadow_feeds, size, kinds, threshold)
            self._shadow.offer(policy.shadow, shadowed)
        return outputs

    async def run(self, model: ServingModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for feeds derived from a request rather than asked for by it (an
        explanation's variations of one input): neither counted nor shadowed, and run by the
        model's explanation runner (its own queue and executor), so explanation rows never wait
        in front of predictions."""
        return await (model.explainer or model.runner).run(feeds)

    def _count(self, model: ServingModel) -> None:
        key = (model.name, model.version)
        child = self._served.get(key)
        if child is None:
            child = self._served[key] = self._metrics.served.labels(model.name, str(model.version))
        child.inc()

    def _ready_version(self, name: str, version: int) -> ServingModel | None:
        entry = self.repository.models.get(name)
        found = entry.versions.get(version) if entry else None
        return found.serving if found else None

    async def close(self) -> None:
        """Stops the shadow workers; comparisons still queued are dropped with the process."""
        await self._shadow.close()


def as_api_error(exc: Exception, retry_after: str) -> ApiError | None:
    """The answer a client gets for an exception of ours, for any protocol: the runner's and the
    deadline's own exceptions stay free of HTTP, and are named here. None: not ours."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DeadlineExceeded):
        return TimedOut(str(exc))
    if isinstance(exc, QueueFull):
        return Overloaded(f"{exc}; retry", headers={"Retry-After": retry_after})
    if isinstance(exc, runner.OutOfMemory):
        return InsufficientMemory(str(exc))
    if isinstance(exc, runner.OutputTooLarge):
        return OutputTooLarge(str(exc))
    if isinstance(exc, runner.ModelFailed):
        return InferenceFailed(str(exc))
    return None

"""The protocol-neutral data plane: every adapter (/predict/*, /v2/*, /models, /ready) asks it
for a model and runs feeds through it, so both protocols share one rule for finding a model, one
for a bad version, and one notion of ready.

Modelled on MLServer's handlers/dataplane.py under thin REST adapters.
"""

from __future__ import annotations

import numpy as np

from service.errors import ModelNotFound, ModelNotReady
from service.loading import ModelVersion, ServingModel
from service.repository import ModelEntry, ModelRepository

# Version folders are numbered with at most 9 digits (service/loading.py): a longer string names
# no version, and is never handed to int() (which refuses over 4,300 digits).
_MAX_VERSION_DIGITS = 9


class DataPlane:
    def __init__(self, repository: ModelRepository, *, explaining: bool = False) -> None:
        self.repository = repository
        self._explaining = explaining

    def for_explanations(self) -> DataPlane:
        """The same models, whose `infer` runs on each model's explanation runner (its own queue
        and executor), so explanation rows never wait in front of predictions."""
        return DataPlane(self.repository, explaining=True)

    def entry(self, name: str) -> ModelEntry:
        entry = self.repository.models.get(name)
        if entry is None:
            raise ModelNotFound(f"no model named {name!r}")
        return entry

    def model(self, name: str, version: str | None = None) -> ServingModel:
        """The version asked for (a string, as both protocols receive it) or, without one, the
        highest ready version. 404 for an unknown model or version, 503 for one that is not ready."""
        entry = self.entry(name)
        if version is None:
            latest = entry.latest_ready()
            if latest is None or latest.serving is None:
                reasons = "; ".join(f"v{v.version}: {v.error}" for v in entry.versions.values())
                raise ModelNotReady(f"model {name!r} is not ready ({reasons})")
            return latest.serving
        found = None
        if version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS:
            found = entry.versions.get(int(version))
        if found is None:
            raise ModelNotFound(f"model {name!r} has no version {version[:20]!r}")
        if found.serving is None:
            raise ModelNotReady(f"{name} v{found.version} is not ready: {found.error}")
        return found.serving

    def versions(self) -> list[ModelVersion]:
        """Every version of every model, ready or not, in name and version order."""
        return [
            version
            for entry in self.repository.models.values()
            for _, version in sorted(entry.versions.items())
        ]

    def ready(self) -> bool:
        """Every version found is loaded and warmed (and at least one model was found)."""
        versions = self.versions()
        return bool(versions) and all(v.ready for v in versions)

    async def load(self, name: str) -> ModelEntry:
        """(Re)loads every version in models/<name>/ and swaps them in at once: the repository
        builds and warms the new sessions off the event loop, so serving never pauses."""
        entry = await self.repository.load(name)
        if entry is None:
            raise ModelNotFound(f"no model folder with versions for {name!r}")
        return entry

    async def unload(self, name: str) -> None:
        """Stops serving a model: it is unknown (404) until it is loaded again."""
        if not await self.repository.unload(name):
            raise ModelNotFound(f"no model named {name!r}")

    async def infer(self, model: ServingModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of the graph, in the card's order; the model's runner batches and times it."""
        runner = (model.explainer or model.runner) if self._explaining else model.runner
        return await runner.run(feeds)

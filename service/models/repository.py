"""The model repository: which versions of which models are serving now.

It owns the lock, the swap and the lookup; loading a version is service/models/loading.py's job. Readers
never lock: a reload builds a fresh dict and swaps it in with one assignment, so a request sees
either the old models or the new, never half, and requests holding an old version finish on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.models.loading import MODEL_NAME, MakeRunner, ModelVersion, load_version, version_folders

log = logging.getLogger("nnserve")


@dataclass
class ModelEntry:
    """All versions of one model, keyed by version number."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)


class ModelRepository:
    def __init__(
        self,
        root: Path,
        *,
        intra_op_threads: int,
        make_runner: MakeRunner,
        max_model_bytes: int,
        max_warm_up_bytes: int,
        make_explainer: MakeRunner | None = None,
    ) -> None:
        self.root = root
        self._intra_op_threads = intra_op_threads
        self._max_model_bytes = max_model_bytes
        self._max_warm_up_bytes = max_warm_up_bytes
        self._make_runner = make_runner
        self._make_explainer = make_explainer
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
        if not MODEL_NAME.fullmatch(name) or not model_dir.is_dir():
            return None
        versions = version_folders(model_dir)
        if not versions:
            return None
        entry = ModelEntry(name)
        for number, path in versions:
            entry.versions[number] = load_version(
                name,
                number,
                path,
                intra_op_threads=self._intra_op_threads,
                make_runner=self._make_runner,
                make_explainer=self._make_explainer,
                max_model_bytes=self._max_model_bytes,
                max_warm_up_bytes=self._max_warm_up_bytes,
            )
        return entry

    async def load(self, name: str) -> ModelEntry | None:
        """Rescans models/<name>/ in a worker thread, so serving goes on meanwhile, then swaps the
        result in; None (and nothing changed) if the folder holds no version. Loads and unloads
        take turns, so two operators' changes apply in the order they were asked for."""
        async with self._changing:
            entry = await asyncio.to_thread(self.scan, name)
            if entry is not None:
                self._swap(name, entry)
            return entry

    async def unload(self, name: str) -> bool:
        """Stops serving a model (in-flight requests finish); False if it was not loaded."""
        async with self._changing:
            if name not in self.models:
                return False
            self._swap(name, None)
            return True

    def _swap(self, name: str, entry: ModelEntry | None) -> None:
        models = {k: v for k, v in self.models.items() if k != name}
        if entry is not None:
            models[name] = entry
        self.models = dict(sorted(models.items()))

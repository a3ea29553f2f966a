"""Shadow inference: a candidate version runs on the requests another version answers, off the
response's path, and is compared with it.

The request hands its tensors and the serving version's outputs to a bounded queue and returns
at once; a few background tasks take them from there, run the shadow version (through its own
runner, so concurrent shadow calls batch), and count per row whether the two versions' verdicts
agree and how far apart their outputs are. A full queue drops the comparison; an error in the
shadow's preprocessing or inference is logged and counted. Neither ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import Context
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.card import GraphCard, ModelCard
from service.loading import ServingModel
from service.metrics import TrafficMetrics

log = logging.getLogger("nnserve.shadow")

Feeds = dict[str, np.ndarray]
ShadowFeeds = Callable[[ServingModel], Awaitable[Feeds]]
"""The request's inputs prepared for another version: /predict/* prepare them with that version's
own card (its vocabulary, its roster), since versions of one model may differ there."""

_WORKERS = 4  # shadow calls in flight at once: enough for the runner to batch them under load
_LOGGED_VALUES = 64  # a logged input shows at most this many values


@dataclass(frozen=True)
class Shadowed:
    serving: ServingModel
    outputs: list[np.ndarray]
    feeds: Feeds
    shadow_feeds: ShadowFeeds | None


def verdicts(card: ModelCard | GraphCard, output: np.ndarray) -> np.ndarray | None:
    """Each row's verdict, as a client would read it from the first output: the class for a
    classifier (a binary one at its card's threshold), None for a model without classes (a
    regression, or a drop-in whose card names no labels)."""
    if output.ndim != 2 or output.dtype.kind != "f":
        return None
    if isinstance(card, ModelCard):
        if card.task == "regression":
            return None
        if card.task == "binary_classification":
            return np.asarray(output[:, -1] >= card.decision_threshold())
        return np.asarray(output.argmax(axis=1))
    if card.labels is None:
        return None
    return np.asarray(output[:, 0] >= 0.5) if output.shape[1] == 1 else np.asarray(output.argmax(axis=1))


def _summary(row: np.ndarray) -> Any:
    """A row fit for a log line: every value of a small one; of a wide one (a bag of words) the
    positions and values that are not zero."""
    flat = row.ravel()
    if flat.size <= _LOGGED_VALUES:
        return flat.tolist()
    nonzero = np.flatnonzero(flat)[:_LOGGED_VALUES]
    return {
        "shape": list(row.shape),
        "nonzero": dict(zip(nonzero.tolist(), flat[nonzero].tolist(), strict=True)),
    }


class Shadow:
    def __init__(
        self,
        find: Callable[[str, int], ServingModel | None],
        metrics: TrafficMetrics,
        *,
        queue_size: int,
        log_per_minute: int,
    ) -> None:
        """`find(name, version)`: the shadow's ServingModel now (reloads swap it), or None."""
        self._find = find
        self._metrics = metrics
        self._queue: asyncio.Queue[tuple[int, Shadowed]] = asyncio.Queue(queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._log_per_minute = log_per_minute
        self._logged = 0
        self._minute = 0.0
        self._failure_logged = -60.0

    def offer(self, version: int, item: Shadowed) -> None:
        """Queues a comparison with shadow `version`, or drops and counts it: never waits."""
        if not self._workers:
            # A fresh context: a task inherits its creator's, and the request's deadline
            # (service/deadline.py) must not follow the workers into every later comparison.
            loop = asyncio.get_running_loop()
            self._workers = [loop.create_task(self._work(), context=Context()) for _ in range(_WORKERS)]
        try:
            self._queue.put_nowait((version, item))
        except asyncio.QueueFull:
            self._failed(item.serving, version, "dropped")

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def _failed(self, serving: ServingModel, version: int, reason: str) -> None:
        self._metrics.shadow_failures.labels(serving.name, str(serving.version), str(version), reason).inc()

    async def _work(self) -> None:
        while True:
            version, item = await self._queue.get()
            try:
                await self._compare(version, item)
            except Exception as exc:  # anything at all: the shadow's failures are counted, never raised
                self._failed(item.serving, version, "failed")
                if time.monotonic() - self._failure_logged >= 60:  # one line a minute, not one a request
                    self._failure_logged = time.monotonic()
                    log.warning("shadow %s v%d failed: %r", item.serving.name, version, exc)

    async def _compare(self, version: int, item: Shadowed) -> None:
        serving = item.serving
        shadow = self._find(serving.name, version)
        if shadow is None:
            raise LookupError(f"{serving.name} v{version} is not ready")
        feeds = item.feeds if item.shadow_feeds is None else await item.shadow_feeds(shadow)
        theirs = (await shadow.runner.run(feeds))[0]
        ours = item.outputs[0]
        if theirs.shape != ours.shape:
            raise ValueError(f"output shape {list(theirs.shape)} differs from the serving {list(ours.shape)}")
        labels = (serving.name, str(serving.version), str(version))
        rows = ours.shape[0]
        difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).reshape(rows, -1).max(axis=1)
        histogram = self._metrics.shadow_difference.labels(*labels)
        for value in difference.tolist():
            histogram.observe(value)
        mine, yours = verdicts(serving.card, ours), verdicts(shadow.card, theirs)
        if mine is None or yours is None:
            self._metrics.shadow_rows.labels(*labels, "unlabelled").inc(rows)
            return
        flipped = mine != yours
        disagree = int(flipped.sum())
        self._metrics.shadow_rows.labels(*labels, "agree").inc(rows - disagree)
        if disagree:
            self._metrics.shadow_rows.labels(*labels, "disagree").inc(disagree)
            self._log(serving, version, item.feeds, np.flatnonzero(flipped), ours, theirs)

    def _log(
        self,
        serving: ServingModel,
        version: int,
        feeds: Feeds,
        rows: np.ndarray,
        ours: np.ndarray,
        theirs: np.ndarray,
    ) -> None:
        """Disagreeing inputs, at most NNSERVE_SHADOW_LOG_PER_MINUTE a minute (0: none)."""
        now = time.monotonic()
        if now - self._minute >= 60:
            self._minute, self._logged = now, 0
        for row in rows.tolist():
            if self._logged >= self._log_per_minute:
                return
            self._logged += 1
            log.warning(
                "shadow disagrees",
                extra={
                    "model": serving.name,
                    "version": serving.version,
                    "shadow": version,
                    "input": {name: _summary(tensor[row]) for name, tensor in feeds.items()},
                    "output": ours[row].tolist(),
                    "shadow_output": theirs[row].tolist(),
                },
            )

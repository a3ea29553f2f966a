"""Shadow inference: a candidate version runs on the requests another version answers, off the
response's path, and is compared with it.

The request hands its tensors and the serving version's outputs to a bounded queue and returns
at once; a background task takes them from there, runs the shadow version in a thread of its own
(onnxruntime lets go of the GIL, so on a second core the shadow's inference overlaps the next
request instead of delaying it, and it never waits behind or holds up the serving runner's
queue), and counts per row whether the two versions' verdicts agree and how far apart their
outputs are. A full queue drops the comparison; an error in the shadow's preprocessing or
inference is logged and counted. Neither ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.card import GraphCard, ModelCard
from service.features.spam import TextKind
from service.models.loading import ServingModel
from service.observability.metrics import TrafficMetrics

log = logging.getLogger("nnserve.shadow")

Feeds = dict[str, np.ndarray]
ShadowFeeds = Callable[[ServingModel], Awaitable[Feeds]]
"""The request's inputs prepared for another version: /predict/* prepare them with that version's
own card (its vocabulary, its roster), since versions of one model may differ there."""

_GATHER_SECONDS = 0.005  # one thread hop and one onnxruntime call for what arrives meanwhile
_BATCH_REQUESTS = 64
_LOGGED_VALUES = 64  # a logged input shows at most this many values


@dataclass(frozen=True, eq=False)
class Shadowed:
    """A request the serving version answered: its inputs and outputs, and how to prepare its
    inputs for another version (None: the same tensors)."""

    serving: ServingModel
    outputs: list[np.ndarray]
    feeds: Feeds
    shadow_feeds: ShadowFeeds | None
    nbytes: int  # the memory it holds until compared: what the queue's limit counts
    # Each row's kind of text ("email" or "text"), where a card judges kinds at thresholds of
    # their own (spam v3), and the operator's threshold (NNSERVE_SPAM_THRESHOLD) if the client's
    # verdict used one: a verdict is compared as the client got it. None: the card's.
    kinds: tuple[TextKind, ...] | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class _Prepared:
    version: int
    item: Shadowed
    shadow: ServingModel
    feeds: Feeds
    group: tuple[Any, ...]  # requests with the same group run as one call


def verdicts(
    card: ModelCard | GraphCard,
    output: np.ndarray,
    kinds: Sequence[TextKind] | None = None,
    threshold: float | None = None,
) -> np.ndarray | None:
    """Each row's verdict, as a client would read it from the first output: the class for a
    classifier (a binary one at `threshold` if the operator set one, else at its card's for the
    row's kind of text), None for a model without classes (a regression, or a drop-in whose card
    names no labels)."""
    if output.ndim != 2 or output.dtype.kind != "f":
        return None
    if isinstance(card, ModelCard):
        if card.task == "regression":
            return None
        if card.task == "binary_classification":
            if kinds is None:
                return np.asarray(output[:, -1] >= card.decision_threshold(threshold))
            return np.asarray(output[:, -1] >= [card.decision_threshold(threshold, kind) for kind in kinds])
        return np.asarray(output.argmax(axis=1))
    if card.labels is None:
        return None
    return np.asarray(output[:, 0] >= 0.5) if output.shape[1] == 1 else np.asarray(output.argmax(axis=1))


def _prepared_otherwise(serving: ModelCard | GraphCard, shadow: ModelCard | GraphCard) -> bool:
    """Whether tensors made for the serving version mean something else to the shadow, or
    cannot be fed to it at all: other input tensors (spam v3's token ids beside v2's bag of
    words), or the same tensors prepared by another card (another vocabulary)."""
    if serving.inputs != shadow.inputs:
        return True
    return (
        isinstance(serving, ModelCard)
        and isinstance(shadow, ModelCard)
        and serving.preprocessing != shadow.preprocessing
    )


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
        queue_bytes: int,
        log_per_minute: int,
    ) -> None:
        """`find(name, version)`: the shadow's ServingModel now (reloads swap it), or None."""
        self._find = find
        self._metrics = metrics
        self._queue: asyncio.Queue[tuple[int, Shadowed]] = asyncio.Queue()
        self._queue_bytes = queue_bytes
        self._held = 0  # bytes of the requests queued or being compared
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self._log_per_minute = log_per_minute
        self._logged = 0
        self._minute = 0.0
        self._failure_logged = -60.0

    def offer(self, version: int, item: Shadowed) -> None:
        """Queues a comparison with shadow `version`, or drops and counts it: never waits."""
        if self._worker is None or self._worker.done():
            # A fresh context: a task inherits its creator's, and the request's deadline
            # (service/deadline.py) must not follow the worker into every later comparison.
            self._worker = asyncio.get_running_loop().create_task(self._work(), context=Context())
        if self._held + item.nbytes > self._queue_bytes:
            self._failed(item.serving, version, "dropped")
            return
        self._held += item.nbytes
        self._queue.put_nowait((version, item))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        self._thread.shutdown(wait=True, cancel_futures=True)

    def _failed(self, serving: ServingModel, version: int, reason: str) -> None:
        self._metrics.shadow_failures.labels(serving.name, str(serving.version), str(version), reason).inc()

    def _failure(self, serving: ServingModel, version: int, exc: Exception) -> None:
        """Anything at all the shadow raises is counted, and logged once a minute at most."""
        self._failed(serving, version, "failed")
        if time.monotonic() - self._failure_logged >= 60:
            self._failure_logged = time.monotonic()
            log.warning("shadow %s v%d failed: %r", serving.name, version, exc)

    async def _work(self) -> None:
        """Gathers what arrives within _GATHER_SECONDS, prepares each request's inputs for its
        shadow (on the loop: Python work in another thread would fight the loop for the GIL),
        and runs each group of like requests as one call in the shadow's thread."""
        while True:
            taken = [await self._queue.get()]
            await asyncio.sleep(_GATHER_SECONDS)
            while len(taken) < _BATCH_REQUESTS and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            try:
                await self._compare_all(taken)
            finally:
                self._held -= sum(item.nbytes for _, item in taken)

    async def _compare_all(self, taken: list[tuple[int, Shadowed]]) -> None:
        groups: dict[tuple[Any, ...], list[_Prepared]] = {}
        for version, item in taken:
            try:
                prepared = await self._prepare(version, item)
            except Exception as exc:
                self._failure(item.serving, version, exc)
                continue
            if prepared is None:
                self._failed(item.serving, version, "incomparable")
                continue
            groups.setdefault(prepared.group, []).append(prepared)
        for group in groups.values():
            await self._run(group)

    async def _prepare(self, version: int, item: Shadowed) -> _Prepared | None:
        """The request's inputs for the shadow; None when it came as tensors prepared for the
        serving version (V2) and the shadow's card prepares its inputs otherwise (another
        vocabulary, say), so that the same tensors mean something else to it."""
        shadow = self._find(item.serving.name, version)
        if shadow is None:
            raise LookupError(f"{item.serving.name} v{version} is not ready")
        if item.shadow_feeds is None and _prepared_otherwise(item.serving.card, shadow.card):
            return None
        feeds = item.feeds if item.shadow_feeds is None else await item.shadow_feeds(shadow)
        signature = tuple((name, array.shape[1:], array.dtype.str) for name, array in sorted(feeds.items()))
        # A graph whose batch dimension is a fixed number takes its requests one by one.
        alone = id(item) if shadow.card.inputs and shadow.card.inputs[0].shape[:1] != [-1] else None
        return _Prepared(version, item, shadow, feeds, (id(item.serving), id(shadow), signature, alone))

    async def _run(self, group: list[_Prepared]) -> None:
        """One call for the group; if it fails, each request again alone, so that a failure is
        counted against the requests that cause it and the others are still compared."""
        first = group[0]
        feeds = {name: np.concatenate([p.feeds[name] for p in group]) for name in first.feeds}
        loop = asyncio.get_running_loop()
        try:
            theirs = (await loop.run_in_executor(self._thread, first.shadow.runner.run_sync, feeds))[0]
            ours = np.concatenate([p.item.outputs[0] for p in group])
            if theirs.shape != ours.shape:
                raise ValueError(f"output shape {list(theirs.shape)}, the serving's {list(ours.shape)}")
            self._compare(group, ours, theirs)
        except Exception as exc:
            if len(group) == 1:
                self._failure(first.item.serving, first.version, exc)
            else:
                for prepared in group:
                    await self._run([prepared])

    def _compare(self, group: list[_Prepared], ours: np.ndarray, theirs: np.ndarray) -> None:
        """Every figure first, then the metrics: a comparison that fails counts nothing twice."""
        first = group[0]
        serving, version = first.item.serving, first.version
        rows = ours.shape[0]
        difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).reshape(rows, -1).max(axis=1)
        kinds = None
        if all(p.item.kinds is not None for p in group):
            kinds = [kind for p in group for kind in p.item.kinds or ()]
        threshold = first.item.threshold  # the operator's: one setting for every request
        mine = verdicts(serving.card, ours, kinds, threshold)
        yours = verdicts(first.shadow.card, theirs, kinds, threshold)
        flipped = None if mine is None or yours is None else mine != yours
        labels = (serving.name, str(serving.version), str(version))
        histogram = self._metrics.shadow_difference.labels(*labels)
        for value in difference.tolist():
            histogram.observe(value)
        if flipped is None:
            self._metrics.shadow_rows.labels(*labels, "unlabelled").inc(rows)
            return
        disagree = int(flipped.sum())
        self._metrics.shadow_rows.labels(*labels, "agree").inc(rows - disagree)
        if disagree:
            self._metrics.shadow_rows.labels(*labels, "disagree").inc(disagree)
            # Each request's own inputs: a group's may differ in width (spam v3's token ids).
            starts = np.cumsum([0] + [p.item.outputs[0].shape[0] for p in group])
            for row in np.flatnonzero(flipped).tolist():
                n = int(np.searchsorted(starts, row, side="right")) - 1
                self._log(serving, version, group[n].item.feeds, row - int(starts[n]), ours[row], theirs[row])

    def _log(
        self,
        serving: ServingModel,
        version: int,
        feeds: Feeds,
        row: int,
        ours: np.ndarray,
        theirs: np.ndarray,
    ) -> None:
        """A disagreeing input (row `row` of `feeds`), unless NNSERVE_SHADOW_LOG_PER_MINUTE were
        logged in the last minute (0: none)."""
        now = time.monotonic()
        if now - self._minute >= 60:
            self._minute, self._logged = now, 0
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
                "output": ours.tolist(),
                "shadow_output": theirs.tolist(),
            },
        )

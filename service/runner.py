"""Runs a model's onnxruntime session off the event loop, batching requests that arrive together.

Adaptive micro-batching without a timer: a lone request runs at once; requests that arrive while
the model is busy wait in a queue and go together as one onnxruntime call when it is free. The
batch size therefore grows with load and never adds latency to an idle server, which is why this
beats the fixed-delay batchers of larger servers on small models.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

Feeds = dict[str, np.ndarray]
Outputs = list[np.ndarray]


class DeadlineExceeded(Exception):
    """The request's inference did not finish within the deadline; its queued work is dropped."""


@dataclass
class BatchObserver:
    """Hooks the metrics module fills in; no-ops by default so the runner works on its own."""

    on_batch: Callable[[int, float], None] = lambda rows, seconds: None
    on_queue_wait: Callable[[float], None] = lambda seconds: None


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.perf_counter)


class ModelRunner:
    """One per loaded model version: owns the session and the queue in front of it."""

    def __init__(
        self,
        session: ort.InferenceSession,
        executor: Executor,
        *,
        max_batch_rows: int,
        batching: bool = True,
        timeout: float | None = None,
        test_delay: float = 0.0,
        observer: BatchObserver | None = None,
    ) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self._executor = executor
        self._max_rows = max_batch_rows
        self._batching = batching
        self._timeout = timeout
        self._test_delay = test_delay
        self._observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self._draining = False

    def run_sync(self, feeds: Feeds) -> Outputs:
        if self._test_delay:
            time.sleep(self._test_delay)
        started = time.perf_counter()
        outputs = self.session.run(self.output_names, feeds)
        rows = next(iter(feeds.values())).shape[0]
        self._observer.on_batch(rows, time.perf_counter() - started)
        return outputs

    async def run(self, feeds: Feeds) -> Outputs:
        """All outputs for these rows, in the session's output order.

        Past the deadline the caller gets DeadlineExceeded and its future is cancelled: if it was
        still queued it never runs; a call already inside onnxruntime finishes for the others
        batched with it.
        """
        loop = asyncio.get_running_loop()
        if self._batching:
            rows = next(iter(feeds.values())).shape[0]
            future: asyncio.Future[Outputs] = loop.create_future()
            self._queue.append(_Pending(feeds, rows, future))
            if not self._draining:
                self._draining = True
                loop.create_task(self._drain())
        else:
            future = loop.run_in_executor(self._executor, self.run_sync, feeds)
        if self._timeout is None:
            return await future
        # A timer that cancels the future: cheaper per request than asyncio.wait_for.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            future.cancel()

        timer = loop.call_later(self._timeout, expire)
        try:
            return await future
        except asyncio.CancelledError:
            if not expired:
                raise  # the caller itself was cancelled (the client went away)
            raise DeadlineExceeded(f"inference did not finish within {self._timeout} s") from None
        finally:
            timer.cancel()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._take_batch()
                if not batch:
                    continue
                now = time.perf_counter()
                for item in batch:
                    self._observer.on_queue_wait(now - item.enqueued)
                try:
                    feeds = _stack([item.feeds for item in batch])
                    outputs = await loop.run_in_executor(self._executor, self.run_sync, feeds)
                except Exception as exc:  # the batch failed: every caller in it hears why
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                start = 0
                for item in batch:
                    stop = start + item.rows
                    if not item.future.done():
                        item.future.set_result([out[start:stop] for out in outputs])
                    start = stop
        finally:
            self._draining = False

    def _take_batch(self) -> list[_Pending]:
        """Requests whose callers still wait, up to max_batch_rows (a bigger one goes alone)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():
                self._queue.popleft()
                continue
            if batch and rows + item.rows > self._max_rows:
                break
            batch.append(self._queue.popleft())
            rows += item.rows
        return batch


def _stack(feeds_list: list[Feeds]) -> Feeds:
    if len(feeds_list) == 1:
        return feeds_list[0]
    return {name: np.concatenate([f[name] for f in feeds_list]) for name in feeds_list[0]}

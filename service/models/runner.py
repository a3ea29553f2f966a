"""Runs a model's onnxruntime session off the event loop, batching requests that arrive together.

Adaptive micro-batching without a timer: a lone request runs at once; requests that arrive while
the model is busy wait in a queue and go together as one onnxruntime call when it is free. The
batch size therefore grows with load and never adds latency to an idle server, which is why this
beats the fixed-delay batchers of larger servers on small models.

Where a call runs follows the same signal. A model faster than the hop to a thread and back runs
on the event loop always. A slower one (the digit CNN, ~70 us) runs on the event loop when a
request finds it idle and it has been idle for longer than one call (sparse traffic: the hop
would be most of the latency), and on the inference thread otherwise (dense traffic: the loop
goes on reading requests meanwhile, and what it reads forms the next batch). A model whose run time
its inputs can set (a drop-in: an output sized by a value, a loop counted by one) never runs on
the event loop, where nothing could stop it: on the inference thread its run is stopped
(onnxruntime's RunOptions.terminate) once no caller waits for it any more.

What onnxruntime refuses to do with a caller's inputs is the caller's answer, never a server
error: a failed node (ModelFailed), memory it could not get (OutOfMemory); and outputs larger
than `max_output_bytes` are refused (OutputTooLarge).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from service import deadline
from service.deadline import Deadline, DeadlineExceeded
from service.observability.metrics import BatchObserver
from service.observability.tracing import Attributes, RequestTrace, current_trace

__all__ = [
    "DeadlineExceeded",
    "InferenceRefused",
    "ModelFailed",
    "ModelRunner",
    "OutOfMemory",
    "OutputTooLarge",
    "QueueFull",
]

log = logging.getLogger("nnserve")

Feeds = dict[str, np.ndarray]
Outputs = list[np.ndarray]


class QueueFull(Exception):
    """The model already has its limit of rows waiting or running: the caller is refused at once
    (503 + Retry-After), which bounds the memory that queued tensors take."""


class InferenceRefused(Exception):
    """onnxruntime cannot answer these inputs: the client's doing, never a server error."""


class ModelFailed(InferenceRefused):
    """A node of the graph failed on the inputs (a reshape they do not fit, a size they make
    negative): 422."""


class OutOfMemory(InferenceRefused):
    """The inputs asked onnxruntime for more memory than the server could give: 507."""


class OutputTooLarge(InferenceRefused):
    """The outputs for one caller's rows are over NNSERVE_MAX_OUTPUT_BYTES: 422."""


_NODE = re.compile(r"running (\w+) node")
_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_SOURCE = re.compile(r"onnxruntime_src|\.(cc|h|cpp):\d+")
_STOPPED = "terminate flag"
_NO_MEMORY = ("Failed to allocate memory", "bad_alloc", "bad allocation")
_MOST_CHARS = 300


def _refusal(exc: Exception) -> Exception:
    """onnxruntime's error for a call, as what the caller hears: its own words when they are
    about the inputs (a dimension that does not fit), only the failed operator's name when they
    quote its source files and C++ signatures (the log keeps them)."""
    text = " ".join(str(exc).split())
    if _STOPPED in text:
        return DeadlineExceeded("the request's deadline passed while its model ran; the run was stopped")
    log.warning("inference refused: %s", text[:1000] or type(exc).__name__)
    found = _NODE.search(text)
    node = f"its {found.group(1)} node" if found else "it"
    if any(sign in text for sign in _NO_MEMORY):
        return OutOfMemory(f"the model ran out of memory on these inputs ({node} could not allocate)")
    if found or _SOURCE.search(text) or not text:
        return ModelFailed(f"the model cannot run on these inputs: {node} failed")
    return ModelFailed(f"the model cannot run on these inputs: {_PREFIX.sub('', text)[:_MOST_CHARS]}")


@dataclass(eq=False)  # compared by identity: the queue removes one caller's entry
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[Outputs]
    trace: RequestTrace | None  # the caller's sampled trace, noted into when its batch runs
    enqueued: float = field(default_factory=time.perf_counter)
    taken: float = 0.0  # when its batch started


class ModelRunner:
    """One per loaded model version: owns the session and the queue in front of it."""

    def __init__(
        self,
        session: ort.InferenceSession,
        executor: Executor,
        *,
        max_batch_rows: int,
        batching: bool = True,
        max_queued_rows: int | None = None,
        timeout: float | None = None,  # for calls outside a request, which carry no deadline
        observer: BatchObserver | None = None,
        inline_below_seconds: float = 0.0,
        inline_when_idle_below_seconds: float = 0.0,
        max_output_bytes: int | None = None,
    ) -> None:
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self._executor = executor
        self._max_rows = max_batch_rows
        self._batching = batching
        self._timeout = timeout
        self._observer = observer or BatchObserver()
        self._max_queued_rows = max_queued_rows
        self._rows = 0  # rows whose callers wait: queued, or in the batch onnxruntime runs
        self._queue: deque[_Pending] = deque()
        self._serving = False
        self._inline_below = inline_below_seconds
        self._inline_when_idle_below = inline_when_idle_below_seconds
        self.inline = False  # set by calibrate(): run on the event loop, no hop to the executor
        self.inline_when_idle = False  # set by calibrate(): on the event loop when traffic is sparse
        self._call_seconds = 0.0
        self._idle_since = time.perf_counter()
        self._max_output_bytes = max_output_bytes
        # The batch onnxruntime runs on the executor, and the options that can stop it.
        self._running: tuple[list[_Pending], ort.RunOptions] | None = None

    def never_inline(self) -> None:
        """Keeps the model off the event loop whatever its warm-up takes: a drop-in timed on
        zeros says nothing of the time its next inputs take, and on the loop no deadline could
        stop it (nor would /health answer meanwhile)."""
        self._inline_below = self._inline_when_idle_below = 0.0

    def fix_batch_rows(self, rows: int) -> None:
        """A graph whose batch dimension is a fixed number takes exactly that many rows a call:
        requests are never stacked beyond it (the codec refuses any other row count)."""
        self._max_rows = rows

    def calibrate(self, feeds: Feeds, calls: int = 20) -> float:
        """Times batch-1 calls and decides where calls run: a model faster than
        `inline_below_seconds` (by the median call) runs on the event loop, since handing a 10 us
        call to a thread and back costs more than the call; a slower one keeps the executor, so
        the loop goes on parsing requests while onnxruntime works. Stops once more than half the
        calls were too slow to run inline (the answer is known), or after a second of at least
        three calls: a model of a second a call would otherwise add 20 s to start-up. Returns
        the median in seconds."""
        times: list[float] = []
        for _ in range(calls):
            started = time.perf_counter()
            self.session.run(self.output_names, feeds)
            times.append(time.perf_counter() - started)
            if sum(t >= self._inline_below for t in times) > calls // 2:
                break
            if len(times) >= 3 and sum(times) > 1.0:
                break
        median = sorted(times)[len(times) // 2]
        self.inline = median < self._inline_below
        self.inline_when_idle = not self.inline and median < self._inline_when_idle_below
        self._call_seconds = median
        return median

    def _sparse(self, rows: int) -> bool:
        """This request is the only one the model has, and the model has been idle for longer
        than a call: no batch would form, and the hop would cost more than it frees the loop for."""
        return (
            self.inline_when_idle
            and self._rows == rows
            and time.perf_counter() - self._idle_since > self._call_seconds
        )

    def run_sync(self, feeds: Feeds, options: ort.RunOptions | None = None) -> Outputs:
        started = time.perf_counter()
        self._observer.on_running(1)
        try:
            outputs: Outputs = self.session.run(self.output_names, feeds, options)
        finally:
            self._observer.on_running(-1)
        rows = next(iter(feeds.values())).shape[0]
        self._observer.on_batch(rows, time.perf_counter() - started)
        return outputs

    def _serve(self, feeds: Feeds, options: ort.RunOptions | None = None) -> Outputs:
        """run_sync for callers: onnxruntime's failures become what the caller hears."""
        try:
            return self.run_sync(feeds, options)
        except Exception as exc:  # onnxruntime's own types (Fail, InvalidArgument, ...)
            raise _refusal(exc) from None

    async def run(self, feeds: Feeds) -> Outputs:
        """All outputs for these rows, in the session's output order.

        The deadline is the request's (service/deadline.py), or `timeout` from now outside a
        request. Past it the caller gets DeadlineExceeded and its future is cancelled: if it was
        still queued it is dropped and never runs; a call already inside onnxruntime finishes for
        the others batched with it, and is stopped once none of them waits (an inline model's
        call, microseconds, always finishes). Work whose deadline passed before it got here is
        never queued, and work that would take the model past `max_queued_rows` is refused
        (QueueFull). Outputs over `max_output_bytes` for this caller's rows: OutputTooLarge.
        """
        limit = deadline.current()
        if limit is None and self._timeout is not None:
            limit = Deadline(time.perf_counter() + self._timeout, self._timeout)
        if limit is not None and limit.remaining() <= 0:
            raise limit.exceeded("before its inference was queued")
        rows = next(iter(feeds.values())).shape[0]
        if self._max_queued_rows is not None and self._rows and self._rows + rows > self._max_queued_rows:
            raise QueueFull(
                f"the model has {self._rows} rows waiting, near its limit of {self._max_queued_rows}"
            )
        trace = current_trace.get()
        if trace is not None:
            trace.since_last_stage("preprocess", time.perf_counter())
        self._rows += rows
        try:
            outputs = await self._answer(feeds, rows, limit, trace)
        finally:
            self._rows -= rows
            if not self._rows:
                self._idle_since = time.perf_counter()
        most = self._max_output_bytes
        if most is not None and (size := sum(out.nbytes for out in outputs)) > most:
            raise OutputTooLarge(
                f"the model's outputs for these inputs take {size:,} bytes, over the limit of "
                f"{most:,} (NNSERVE_MAX_OUTPUT_BYTES)"
            )
        return outputs

    async def _answer(
        self, feeds: Feeds, rows: int, limit: Deadline | None, trace: RequestTrace | None
    ) -> Outputs:
        loop = asyncio.get_running_loop()
        pending: _Pending | None = None
        alone: ort.RunOptions | None = None  # stops this caller's own run, unbatched
        if self._batching:
            future: asyncio.Future[Outputs] = loop.create_future()
            pending = _Pending(feeds, rows, future, trace)
            self._queue.append(pending)
            if not self._serving:
                self._serving = True
                if self.inline or self._sparse(rows):
                    loop.call_soon(self._serve_inline)
                else:
                    loop.create_task(self._serve_on_executor())
        elif self.inline or self._sparse(rows):
            future = loop.create_future()
            future.set_result(self._run_alone(feeds, trace, None))
        else:
            alone = ort.RunOptions()
            future = loop.run_in_executor(self._executor, self._run_alone, feeds, trace, alone)
        if limit is None or self.inline:
            # An inline model's batch runs in the loop's next turn, before any timer set now
            # could fire: a timer would never change the answer.
            try:
                return await future
            except asyncio.CancelledError:
                self._abandon(alone)
                raise
        # A timer that cancels the future: cheaper per request than asyncio.wait_for.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            future.cancel()
            if pending is not None and pending in self._queue:
                self._queue.remove(pending)  # its tensors are freed now, not at the next batch

        timer = loop.call_later(limit.remaining(), expire)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(alone)
            if not expired:
                raise  # the caller itself was cancelled (the client went away)
            raise limit.exceeded("before its inference finished") from None
        finally:
            timer.cancel()

    def _abandon(self, alone: ort.RunOptions | None) -> None:
        """A caller stopped waiting (its deadline passed, or it went away): its own run, or the
        batch running on the executor once none of its callers waits, is stopped at onnxruntime's
        next node instead of running on for nobody."""
        if alone is not None:
            alone.terminate = True
        running = self._running
        if running is not None and all(item.future.done() for item in running[0]):
            running[1].terminate = True

    def _run_alone(self, feeds: Feeds, trace: RequestTrace | None, options: ort.RunOptions | None) -> Outputs:
        """One caller's rows without batching: its inference is its own call."""
        if trace is None:
            return self._serve(feeds, options)
        started = time.perf_counter()
        outputs = self._serve(feeds, options)
        rows = next(iter(feeds.values())).shape[0]
        trace.stage("inference", started, time.perf_counter(), {"nnserve.batch.size": rows})
        return outputs

    def _serve_inline(self) -> None:
        """An inline model's queue, emptied at the loop's next turn: what the loop read meanwhile
        goes as one batch. A plain callback rather than a task, since nothing here waits."""
        try:
            while batch := self._take_batch():
                outcomes = self._serve_batch(batch)
                for part, outcome in outcomes:
                    self._settle(part, outcome)
        finally:
            self._serving = False

    async def _serve_on_executor(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while batch := self._take_batch():
                options = ort.RunOptions()
                self._running = (batch, options)
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._serve_batch, batch, options)
                except Exception as exc:  # the executor itself could not run it
                    outcomes = [(batch, exc)]
                finally:
                    self._running = None
                for part, outcome in outcomes:
                    self._settle(part, outcome)
        finally:
            self._serving = False

    def _serve_batch(
        self, batch: list[_Pending], options: ort.RunOptions | None = None
    ) -> list[tuple[list[_Pending], Outputs | Exception]]:
        """The batch's outputs, or why it failed. When onnxruntime refuses a batch of several
        callers' inputs, each caller's inputs run again alone, so that only those whose own
        inputs fail hear it: a client cannot fail the requests of others that shared its batch.
        The same when the outputs do not have a row for each input row (a graph that mixes its rows,
        as a drop-in may): each caller's rows could not be told apart. (A stopped run, its deadline
        passed, is not run again.)"""
        try:
            outputs = self._serve(self._feeds(batch), options)
        except InferenceRefused as exc:
            if len(batch) == 1:
                return [(batch, exc)]
        except Exception as exc:
            return [(batch, exc)]
        else:
            rows = sum(item.rows for item in batch)
            if len(batch) == 1 or all(out.shape[:1] == (rows,) for out in outputs):
                return [(batch, outputs)]
        alone: list[tuple[list[_Pending], Outputs | Exception]] = []
        for item in batch:
            if item.future.done():  # its caller stopped waiting meanwhile
                continue
            try:
                alone.append(([item], self._serve(item.feeds, options)))
            except Exception as exc:
                alone.append(([item], exc))
        return alone

    def _feeds(self, batch: list[_Pending]) -> Feeds:
        now = time.perf_counter()
        for item in batch:
            self._observer.on_queue_wait(now - item.enqueued)
            item.taken = now
        return _stack([item.feeds for item in batch])

    @staticmethod
    def _settle(batch: list[_Pending], outcome: Outputs | Exception) -> None:
        """Each caller still waiting gets its rows of the outputs, or hears why the batch failed;
        a traced caller's trace notes its wait and the batch's inference."""
        start = 0
        # For the traced callers: read and built once, at the first of them.
        ended = 0.0
        size: Attributes = {}
        for item in batch:
            stop = start + item.rows
            if not item.future.done():
                if item.trace is not None:
                    ended = ended or time.perf_counter()
                    size = size or {"nnserve.batch.size": sum(other.rows for other in batch)}
                    item.trace.stage("queue wait", item.enqueued, item.taken)
                    item.trace.stage("inference", item.taken, ended, size)
                if isinstance(outcome, Exception):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result([out[start:stop] for out in outcome])
            start = stop

    def _take_batch(self) -> list[_Pending]:
        """Requests whose callers still wait, up to max_batch_rows (a bigger one goes alone);
        empty only when the queue is. Only requests whose tensors have the first one's shape past
        the batch dimension join it (a model with a dynamic width, such as spam's token ids, gets
        rows of several widths); the others keep their places for the next batch."""
        batch: list[_Pending] = []
        skipped: list[_Pending] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():
                self._queue.popleft()
                continue
            if batch and rows + item.rows > self._max_rows:
                break
            if batch and _widths(item.feeds) != _widths(batch[0].feeds):
                skipped.append(self._queue.popleft())
                continue
            batch.append(self._queue.popleft())
            rows += item.rows
        self._queue.extendleft(reversed(skipped))
        return batch


def _widths(feeds: Feeds) -> list[tuple[int, ...]]:
    return [tensor.shape[1:] for tensor in feeds.values()]


def _stack(feeds_list: list[Feeds]) -> Feeds:
    if len(feeds_list) == 1:
        return feeds_list[0]
    return {name: np.concatenate([f[name] for f in feeds_list]) for name in feeds_list[0]}

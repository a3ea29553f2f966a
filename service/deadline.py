"""The request's deadline: fixed once when the request arrives, and honoured by every step that
works for it (image decoding, the model's queue, the model), so one budget covers the request.

The middleware sets it from NNSERVE_INFERENCE_TIMEOUT_SECONDS, or from the client's
`X-Request-Timeout` when that asks for less. A context variable carries it, so the routes between
the middleware and the runner need not pass it along; work handed to a thread sees it too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, Token, copy_context
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

HEADER = b"x-request-timeout"
Result = TypeVar("Result")


class DeadlineExceeded(Exception):
    """The request's deadline passed; the client hears 504 and its queued work is dropped."""


class InvalidTimeout(ValueError):
    """An X-Request-Timeout that is not a number of seconds above zero."""


@dataclass(frozen=True)
class Deadline:
    at: float  # time.perf_counter() value
    seconds: float

    def remaining(self) -> float:
        return self.at - time.perf_counter()

    def exceeded(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"the request's deadline of {self.seconds:g} s passed {what}")


_current: ContextVar[Deadline | None] = ContextVar("nnserve_deadline", default=None)


def start(seconds: float) -> Token[Deadline | None]:
    return _current.set(Deadline(time.perf_counter() + seconds, seconds))


def reset(token: Token[Deadline | None]) -> None:
    _current.reset(token)


def current() -> Deadline | None:
    return _current.get()


def check(what: str) -> None:
    """Raises DeadlineExceeded if the request's deadline has passed: called between steps, so
    work for a request that nobody waits for any more stops at the next step."""
    deadline = _current.get()
    if deadline is not None and deadline.remaining() <= 0:
        raise deadline.exceeded(what)


def requested_seconds(value: bytes | None, most: float) -> float:
    """The client's X-Request-Timeout, clamped to the server's own deadline; `most` without one."""
    if value is None:
        return most
    try:
        seconds = float(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        seconds = math.nan
    if not seconds > 0:  # also refuses NaN
        raise InvalidTimeout("X-Request-Timeout must be a number of seconds above 0, e.g. 0.5")
    return min(seconds, most)


@cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """The threads images are decoded in, one pool per size for the process: its size is how
    many images are decoded at once, whatever the number of requests, which bounds their memory."""
    return ThreadPoolExecutor(threads, thread_name_prefix="decode")


async def in_thread(threads: int, work: Callable[[], Result], what: str) -> Result:
    """`work` in one of `threads` threads, within the request's deadline. Past it the caller gets
    DeadlineExceeded at once; work still waiting for a thread never starts, and work running
    stops at its next `check`."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_pool(threads), copy_context().run, work)
    deadline = _current.get()
    if deadline is None:
        return await future
    try:
        return await asyncio.wait_for(future, max(deadline.remaining(), 0.0))
    except TimeoutError:
        raise deadline.exceeded(what) from None

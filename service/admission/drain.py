"""Draining on SIGTERM, so that a load balancer sees it coming.

Without it, a server that stops listening at once leaves every balancer that has not noticed yet
sending to a closed port. With it, SIGTERM first turns readiness to 503 (the middleware answers
/ready and /v2/health/ready so while `draining` is set) while requests are still accepted and
served, with `Connection: close` so that clients reconnect, to another replica once the balancer
has noticed. After NNSERVE_DRAIN_SECONDS the server stops listening, finishes what is in flight
within the rest of NNSERVE_SHUTDOWN_GRACE_SECONDS, and exits.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn

READINESS_PATHS = frozenset({"/ready", "/v2/health/ready"})


class Flag:
    """A flag that a signal handler may set. A handler runs between two bytecodes of the main
    thread, inside whatever that thread was doing, an earlier handler included: one that takes a
    lock (threading.Event.set does) can wait forever for a lock its own thread holds. Setting an
    attribute takes none."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


draining = Flag()
"""Set on SIGTERM in this process: readiness answers 503 from then on."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain between SIGTERM and closing the listening socket. A second
    SIGTERM, or SIGINT (Ctrl+C), ends the drain and stops as uvicorn does, within the grace;
    signals after that change nothing (never a forced exit that skips the app's shutdown)."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._stop_listening_at: float | None = None
        self._listening = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal handler: it only records, and the event loop acts on it (on_tick, uvicorn's
        main loop). Nothing here may take a lock (see Flag). It never calls uvicorn's own
        handler, which turns a SIGINT that finds the stop begun into a forced exit: one that
        skips the app's shutdown and cancels its lifespan mid-way. A signal handler can land
        inside another, so a check-then-set there races; here every signal only sets, and the
        stop stays bounded by the grace. No signal is kept to be raised again at exit: the
        process ends 0 after a graceful stop (__main__.py)."""
        if sig == signal.SIGTERM and not draining.is_set() and self.drain_seconds > 0:
            draining.set()
            self._stop_listening_at = time.monotonic() + self.drain_seconds
            return
        draining.set()
        self.should_exit = True

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, but when serving ends the stop signals are ignored rather than handed back
        to the handlers from before: the event loop is still closing then, and a handler that
        raised there (__main__.py's exit) turned a clean stop into exit 1 when a SIGINT of a
        storm landed in that window. Nothing is left to stop, and no signal is raised again."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for stop in uvicorn.server.HANDLED_SIGNALS:
            signal.signal(stop, self.handle_exit)
        try:
            yield
        finally:
            for stop in uvicorn.server.HANDLED_SIGNALS:
                signal.signal(stop, signal.SIG_IGN)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's loop calls this every 0.1 s. The drain ends over two ticks: the first past it
        stops listening, the next starts uvicorn's shutdown. That shutdown closes at once every
        connection whose request has not begun, and one accepted just before the listener closed
        usually has not been read yet: it would be dropped unanswered. A tick later it has begun,
        and it is served (with `Connection: close`)."""
        if self._stop_listening_at is not None and time.monotonic() >= self._stop_listening_at:
            if self._listening:
                for listener in self.servers:
                    listener.close()  # connections already accepted stay open
                self._listening = False
            else:
                self.should_exit = True
        return await super().on_tick(counter)

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
import time
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
    signals after that change nothing."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._stop_listening_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal handler: it only records (as uvicorn's own does), and the event loop acts on
        it in on_tick. Nothing here may take a lock (see Flag)."""
        if sig == signal.SIGTERM and not draining.is_set() and self.drain_seconds > 0:
            draining.set()
            self._stop_listening_at = time.monotonic() + self.drain_seconds
            return
        draining.set()
        if self.should_exit:
            # Already stopping, within the grace: uvicorn's own handler would make a second
            # SIGINT skip the app's shutdown and leave its lifespan to be cancelled mid-way.
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's loop calls this every 0.1 s: the drain ends on the first tick past it."""
        if self._stop_listening_at is not None and time.monotonic() >= self._stop_listening_at:
            self.should_exit = True
        return await super().on_tick(counter)

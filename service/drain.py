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
from types import FrameType

import uvicorn

READINESS_PATHS = frozenset({"/ready", "/v2/health/ready"})

draining = threading.Event()
"""Set on SIGTERM in this process: readiness answers 503 from then on."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain between SIGTERM and closing the listening socket. A second
    SIGTERM, or SIGINT (Ctrl+C), stops at once as uvicorn does."""

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._stop_listening_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not draining.is_set() and self.drain_seconds > 0:
            draining.set()
            self._stop_listening_at = time.monotonic() + self.drain_seconds
            return
        draining.set()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's loop calls this every 0.1 s: the drain ends on the first tick past it."""
        if self._stop_listening_at is not None and time.monotonic() >= self._stop_listening_at:
            self.should_exit = True
        return await super().on_tick(counter)

"""Overload shedding: bounded latency and memory instead of an unbounded queue. Past either
budget a request is refused at once with 503 + Retry-After, which a client or balancer retries
elsewhere. The counts are plain integers: every caller runs on the one event loop."""

from __future__ import annotations

from service.config import Settings
from service.errors import Overloaded


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.max_in_flight = settings.max_in_flight
        self.max_bytes_in_flight = settings.max_bytes_in_flight
        self.retry_after = str(settings.retry_after_seconds)
        self.in_flight = 0
        self.bytes_in_flight = 0

    def overloaded(self, limit: str) -> Overloaded:
        return Overloaded(
            f"the server is at its limit of {limit} in flight; retry",
            headers={"Retry-After": self.retry_after},
        )

    def enter(self) -> None:
        """One more inference request in flight, if the limit allows; leave() when answered."""
        if self.in_flight >= self.max_in_flight:
            raise self.overloaded(f"{self.max_in_flight} requests")
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1

    def hold(self, held: int, size: int) -> int:
        """Grows what a request holds of the byte budget to `size`, if the budget allows; the
        new amount held, to give back with release()."""
        if size <= held:
            return held
        if self.bytes_in_flight + size - held > self.max_bytes_in_flight:
            raise self.overloaded(f"{self.max_bytes_in_flight} bytes of request bodies")
        self.bytes_in_flight += size - held
        return size

    def release(self, held: int) -> None:
        self.bytes_in_flight -= held

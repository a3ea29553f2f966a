"""What a shadow version costs the client: /predict/spam at one connection on two servers, one
plain and one with NNSERVE_SHADOW (the previous spam version beside the serving one), measured
back to back in interleaved rounds as make bench measures everything. The target: the shadowed
server's p50 within 10% of the plain one's.

Part of `make bench`; alone: `python -m bench.shadow` (BENCH_SECONDS, BENCH_ROUNDS as for make bench).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import httpx

from bench import servers
from bench.cases import MODELS, SHORT_SPAM_CASE, Case, http_cases
from bench.load import Wrk, interleaved, warm
from bench.worst_case import server_cpu_seconds

from support.server import Server

P50_TARGET = 1.10


def measure(wrk: Wrk, workdir: Path, cases: list[Case]) -> list[str]:
    """The comparison's lines, printed as well; none if the bench's cases leave spam out."""
    case = next((c for c in cases if c.name == SHORT_SPAM_CASE), None)
    versions = sorted(int(p.name) for p in (MODELS / "spam").iterdir() if p.name.isdigit())
    if case is None or len(versions) < 2:
        return []
    shadow = f"spam:{versions[-2]}"
    plain, _ = servers.nnserve(workdir, NNSERVE_LOG_LEVEL="warning")
    shadowed, _ = servers.nnserve(workdir, NNSERVE_LOG_LEVEL="warning", NNSERVE_SHADOW=shadow)
    try:
        warm(plain.url, [case])
        warm(shadowed.url, [case])
        before = [_cpu_and_requests(service) for service in (plain, shadowed)]
        variants = [("no shadow", plain, case), (f"shadow {shadow}", shadowed, case)]
        off, on = interleaved(wrk, case.name, 1, variants)
        cpu_off, cpu_on = (
            _per_request(start, _cpu_and_requests(service))
            for start, service in zip(before, (plain, shadowed), strict=True)
        )
    finally:
        plain.stop()
        shadowed.stop()
    ratio = on.p50_ms / off.p50_ms
    lines = [
        f"Shadow ({shadow} beside the serving spam), {case.name}, 1 connection: p50 {off.p50_ms:.3f} -> "
        f"{on.p50_ms:.3f} ms ({ratio:.2f}x), p99 {off.p99_ms:.3f} -> {on.p99_ms:.3f} ms, "
        f"{off.rps:.0f} -> {on.rps:.0f} req/s; server CPU per request {cpu_off:.0f} -> {cpu_on:.0f} us "
        "(the shadow's inference included, in its own thread)",
        f"- [{'x' if ratio <= P50_TARGET else ' '}] shadow p50 within {P50_TARGET - 1:.0%} of no shadow: "
        f"{ratio:.2f}x",
    ]
    print("\n".join(lines), flush=True)
    return lines


def _cpu_and_requests(service: Server) -> tuple[float, float]:
    """The process's CPU seconds (user and system, every thread) and the requests it answered."""
    cpu = server_cpu_seconds(service.process.pid)
    metrics = httpx.get(service.url + "/metrics").text
    answered = sum(
        float(n)
        for n in re.findall(r'^nnserve_requests_total\{endpoint="/predict/spam".*\} (\S+)$', metrics, re.M)
    )
    return cpu, answered


def _per_request(start: tuple[float, float], end: tuple[float, float]) -> float:
    """Microseconds of CPU per request between two readings."""
    return (end[0] - start[0]) / max(end[1] - start[1], 1) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        measure(Wrk(workdir), workdir, http_cases())


if __name__ == "__main__":
    main()

"""A burst far past capacity: the service sheds load at once with 503 + Retry-After instead of
queueing without end, every answer comes quickly, and it is healthy afterwards."""

from __future__ import annotations

import asyncio
import time

import httpx

from conftest import StartServer

BURST = 300
IN_FLIGHT = 4
SHED_BOUND_S = 2.0  # includes the client opening 300 connections at once
ALL_BOUND_S = 10.0


async def _burst(url: str) -> list[tuple[int, float, str | None]]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def one(i: int) -> tuple[int, float, str | None]:
            started = time.perf_counter()
            response = await http.post("/predict/wine", json={"guests": ["Stiffy"] if i % 2 else []})
            return response.status_code, time.perf_counter() - started, response.headers.get("Retry-After")

        return await asyncio.gather(*(one(i) for i in range(BURST)))


def test_a_burst_gets_200s_and_fast_503s_with_retry_after(start_server: StartServer) -> None:
    server = start_server(NNSERVE_MAX_IN_FLIGHT=str(IN_FLIGHT), NNSERVE_TEST_INFERENCE_DELAY_MS="20")
    results = asyncio.run(_burst(server.url))
    statuses = [status for status, _, _ in results]
    ok, shed = statuses.count(200), statuses.count(503)
    shed_latency = max((s for status, s, _ in results if status == 503), default=0.0)
    slowest = max(s for _, s, _ in results)
    print(f"\noverload: {BURST} requests, {ok} x 200, {shed} x 503, slowest 503 {shed_latency:.3f} s, "
          f"slowest overall {slowest:.3f} s")
    assert ok + shed == BURST, f"unexpected statuses: {sorted(set(statuses))}"
    assert ok >= IN_FLIGHT and shed > 0
    assert all(retry == "1" for status, _, retry in results if status == 503)
    assert shed_latency < SHED_BOUND_S and slowest < ALL_BOUND_S
    with server.client() as http:
        assert http.get("/ready").status_code == 200
        assert http.post("/predict/wine", json={"guests": []}).status_code == 200

"""A burst far past capacity: the service sheds load at once with 503 + Retry-After instead of
queueing without end, every answer comes quickly, and it is healthy afterwards."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from support.server import StartServer
from support.slow_model import SlowModels

BURST = 300
IN_FLIGHT = 4
SHED_BOUND_S = 2.0  # as the client sees it, which includes opening 300 connections at once
ALL_BOUND_S = 10.0
SERVER_SHED_BOUND_MS = 100.0  # as the server's access log sees it: the decision alone


async def _burst(url: str) -> list[tuple[httpx.Response, float]]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def one(i: int) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            response = await http.post("/predict/wine", json={"guests": ["Stiffy"] if i % 2 else []})
            return response, time.perf_counter() - started

        return await asyncio.gather(*(one(i) for i in range(BURST)))


def test_a_burst_gets_200s_and_fast_503s_with_retry_after(
    start_server: StartServer, slow_models: SlowModels
) -> None:
    server = start_server(NNSERVE_MAX_IN_FLIGHT=str(IN_FLIGHT), NNSERVE_MODELS_DIR=str(slow_models(20)))
    results = asyncio.run(_burst(server.url))
    statuses = [response.status_code for response, _ in results]
    ok, shed = statuses.count(200), statuses.count(503)
    shed_latency = max((s for response, s in results if response.status_code == 503), default=0.0)
    slowest = max(s for _, s in results)
    with server.client() as http:
        assert http.get("/ready").status_code == 200
        assert http.post("/predict/wine", json={"guests": []}).status_code == 200
        http.get("/health", headers={"X-Request-ID": "overload-done"})
    access = [
        json.loads(line)
        for line in server.wait_for_log("overload-done").splitlines()
        if '"nnserve.access"' in line
    ]
    server_shed_ms = max(e["latency_ms"] for e in access if e["status"] == 503)
    print(
        f"\noverload: {BURST} requests, {ok} x 200, {shed} x 503; slowest 503 {shed_latency:.3f} s "
        f"at the client, {server_shed_ms:.2f} ms in the server; slowest overall {slowest:.3f} s"
    )
    assert ok + shed == BURST, f"unexpected statuses: {sorted(set(statuses))}"
    assert ok >= IN_FLIGHT and shed > 0
    for response, _ in results:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1" and response.json()["code"] == "overloaded"
    assert shed_latency < SHED_BOUND_S and slowest < ALL_BOUND_S
    assert server_shed_ms < SERVER_SHED_BOUND_MS

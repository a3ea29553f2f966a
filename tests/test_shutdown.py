"""SIGTERM while slow requests are in flight: they all finish, new connections are refused, and
the process exits 0 within the grace period."""

from __future__ import annotations

import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from conftest import StartServer

SLOW_MS = 400
IN_FLIGHT = 4
GRACE_S = 20


def test_sigterm_drains_in_flight_requests_and_exits_0(start_server: StartServer) -> None:
    server = start_server(
        NNSERVE_TEST_INFERENCE_DELAY_MS=str(SLOW_MS),
        NNSERVE_BATCHING="false",
        NNSERVE_SHUTDOWN_GRACE_SECONDS=str(GRACE_S),
    )

    def call(_: int) -> int:
        return httpx.post(f"{server.url}/predict/wine", json={"guests": []}, timeout=30).status_code

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures = [pool.submit(call, i) for i in range(IN_FLIGHT)]
        time.sleep(SLOW_MS / 1000 / 2)  # all sent; the first is inside onnxruntime
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with socket.socket() as probe:
            refused = probe.connect_ex(("127.0.0.1", server.port)) != 0
        statuses = [f.result() for f in futures]
    exit_code = server.process.wait(GRACE_S)
    took = time.monotonic() - signalled
    print(f"\nshutdown: {statuses} in flight at SIGTERM, exit {exit_code} after {took:.2f} s")
    assert statuses == [200] * IN_FLIGHT
    assert refused, "a new connection was accepted after SIGTERM"
    assert exit_code == 0
    assert took < GRACE_S

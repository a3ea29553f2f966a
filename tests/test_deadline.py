"""A request whose inference cannot finish in time gets 504 quickly, and queued work is dropped."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from conftest import StartServer

DEADLINE_S = 0.3
DELAY_MS = 1500


def _wine_batches_run(http: httpx.Client) -> float:
    metrics = http.get("/metrics").text
    found = re.search(r'nnserve_batch_size_count\{model="wine",version="\d+"\} (\S+)', metrics)
    assert found, metrics
    return float(found.group(1))


def test_past_the_deadline_the_client_gets_504_and_queued_work_never_runs(
    start_server: StartServer,
) -> None:
    server = start_server(
        NNSERVE_INFERENCE_TIMEOUT_SECONDS=str(DEADLINE_S), NNSERVE_TEST_INFERENCE_DELAY_MS=str(DELAY_MS)
    )
    with server.client() as http:
        before = _wine_batches_run(http)

        def call(i: int) -> tuple[int, float, str]:
            started = time.perf_counter()
            response = httpx.post(f"{server.url}/predict/wine", json={"guests": ["Stiffy"] * (i % 2)})
            return response.status_code, time.perf_counter() - started, response.json()["code"]

        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(call, range(5)))
        print(f"\ndeadline {DEADLINE_S} s, inference {DELAY_MS} ms: {results}")
        assert all(status == 504 and code == "deadline_exceeded" for status, _, code in results)
        assert max(seconds for _, seconds, _ in results) < DELAY_MS / 1000
        time.sleep(2 * DELAY_MS / 1000)  # let the one call already inside onnxruntime finish
        assert _wine_batches_run(http) - before == 1, "queued requests past their deadline ran"

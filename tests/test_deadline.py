"""A request whose inference cannot finish in time gets 504 quickly, and the work queued behind
it is dropped: it never reaches onnxruntime, with or without micro-batching."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.server import StartServer

DEADLINE_S = 0.2
DELAY_MS = 1500
CALLERS = 5


def _wine_batches_run(http: httpx.Client) -> float:
    """onnxruntime calls made for wine so far: the batch-size histogram's count, which run_sync
    feeds after every call, batched or not."""
    metrics = http.get("/metrics").text
    found = re.search(r'nnserve_batch_size_count\{model="wine",version="\d+"\} (\S+)', metrics)
    assert found, metrics
    return float(found.group(1))


@pytest.mark.parametrize("batching", ["true", "false"])
def test_past_the_deadline_the_client_gets_504_and_queued_work_never_runs(
    start_server: StartServer, batching: str
) -> None:
    server = start_server(
        NNSERVE_INFERENCE_TIMEOUT_SECONDS=str(DEADLINE_S),
        NNSERVE_TEST_INFERENCE_DELAY_MS=str(DELAY_MS),
        NNSERVE_BATCHING=batching,
    )
    with server.client() as http:
        before = _wine_batches_run(http)

        def call(i: int) -> tuple[int, float, str]:
            started = time.perf_counter()
            response = httpx.post(f"{server.url}/predict/wine", json={"guests": ["Stiffy"] * (i % 2)})
            return response.status_code, time.perf_counter() - started, response.json()["code"]

        with ThreadPoolExecutor(CALLERS) as pool:
            results = list(pool.map(call, range(CALLERS)))
        time.sleep(2 * DELAY_MS / 1000)  # let the one call already inside onnxruntime finish
        ran = _wine_batches_run(http) - before
        slowest = max(seconds for _, seconds, _ in results)
        print(
            f"\ndeadline {DEADLINE_S} s, inference {DELAY_MS} ms, batching={batching}: "
            f"{[(status, code) for status, _, code in results]}, slowest answer {slowest:.3f} s, "
            f"onnxruntime calls made {ran:.0f} of {CALLERS} requests"
        )
        assert all(status == 504 and code == "deadline_exceeded" for status, _, code in results)
        assert slowest < DELAY_MS / 1000, "the 504 waited for the inference"
        assert ran == 1, "requests queued past their deadline still ran"
        assert http.get("/ready").status_code == 200

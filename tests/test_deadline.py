"""A request whose inference cannot finish in time gets 504 quickly, the work queued behind it is
dropped (it never reaches onnxruntime) and the run already inside onnxruntime is stopped once no
caller waits for it, with or without micro-batching."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.server import Server, StartServer
from support.slow_model import SlowModels

DEADLINE_S = 0.2
DELAY_MS = 1500
CALLERS = 5


def _wine_calls(http: httpx.Client) -> tuple[float, float]:
    """onnxruntime calls for wine so far: (finished, under way). Finished ones are the
    batch-size histogram's count, fed after every call, batched or not; one under way is in
    nnserve_inferences_running from the moment it enters onnxruntime."""
    metrics = http.get("/metrics").text
    finished = re.search(r'nnserve_batch_size_count\{model="wine",version="\d+"\} (\S+)', metrics)
    running = re.search(r'nnserve_inferences_running\{model="wine",version="\d+"\} (\S+)', metrics)
    assert finished and running, metrics
    return float(finished.group(1)), float(running.group(1))


def _wait(http: httpx.Client, done: Callable[[float, float], bool], seconds: float) -> tuple[float, float]:
    """The wine calls once `done(finished, running)`, or as they are after `seconds`."""
    give_up = time.monotonic() + seconds
    while not done(*(calls := _wine_calls(http))) and time.monotonic() < give_up:
        time.sleep(0.02)
    return calls


def _burst(server: Server, headers: dict[str, str]) -> tuple[list[tuple[int, float, str]], float]:
    """CALLERS requests at once; each one's (status, seconds, code), and the onnxruntime calls
    that started for them."""
    with server.client() as http:
        before, _ = _wine_calls(http)

        def call(i: int) -> tuple[int, float, str]:
            started = time.perf_counter()
            response = httpx.post(
                f"{server.url}/predict/wine",
                json={"guests": ["Stiffy"] * (i % 2)},
                headers=headers,
                timeout=30,
            )
            return response.status_code, time.perf_counter() - started, response.json()["code"]

        with ThreadPoolExecutor(CALLERS) as pool:
            results = list(pool.map(call, range(CALLERS)))
        # The one call already inside onnxruntime is stopped once nobody waits for it (later on a
        # busy machine). A queued call kept past its deadline would enter onnxruntime as that one
        # leaves, and is counted as it enters: a moment's look finds it, long before it could finish.
        _wait(http, lambda finished, running: running == 0, 15 * DELAY_MS / 1000)
        finished, running = _wait(http, lambda finished, running: finished + running > before, 0.5)
        assert http.get("/ready").status_code == 200
        return results, finished + running - before


@pytest.mark.parametrize(
    ("set_by", "batching"), [("server", "true"), ("server", "false"), ("client", "true")]
)
def test_past_the_deadline_the_client_gets_504_and_queued_work_never_runs(
    start_server: StartServer, slow_models: SlowModels, set_by: str, batching: str
) -> None:
    """The deadline is the server's NNSERVE_INFERENCE_TIMEOUT_SECONDS, or the client's own
    X-Request-Timeout under the server's default of 10 s."""
    env = {"NNSERVE_MODELS_DIR": str(slow_models(DELAY_MS)), "NNSERVE_BATCHING": batching}
    if set_by == "server":
        env["NNSERVE_INFERENCE_TIMEOUT_SECONDS"] = str(DEADLINE_S)
    headers = {"X-Request-Timeout": str(DEADLINE_S)} if set_by == "client" else {}
    results, ran = _burst(start_server(**env), headers)
    slowest = max(seconds for _, seconds, _ in results)
    print(
        f"\ndeadline {DEADLINE_S} s set by the {set_by}, inference {DELAY_MS} ms, batching={batching}: "
        f"{[(status, code) for status, _, code in results]}, slowest answer {slowest:.3f} s, "
        f"onnxruntime calls made {ran:.0f} of {CALLERS} requests"
    )
    assert all(status == 504 and code == "deadline_exceeded" for status, _, code in results)
    assert slowest < DELAY_MS / 1000, "the 504 waited for the inference"
    assert ran == 0, "a run nobody waited for went on, or requests queued past their deadline ran"

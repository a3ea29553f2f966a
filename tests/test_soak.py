"""A minute of mixed load on every endpoint: no errors, and no memory growth (a leak check)."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image
from samples import samples

from support.server import Server, StartServer

SOAK_SECONDS = 60
CLIENTS = 4
WARM_UP_REQUESTS = 3000
# Each client sends a few hundred requests a second on this 2-core machine; a tenth of that over the
# minute is the floor below which the test would prove nothing.
MIN_REQUESTS_PER_CLIENT = 1500


def _requests() -> list[tuple[str, str, dict[str, Any] | None]]:
    pixels = samples("digit")[0].input["pixels"]
    png = io.BytesIO()
    Image.fromarray((np.asarray(pixels).reshape(28, 28) * 255).astype(np.uint8)).resize((90, 90)).save(
        png, "PNG"
    )
    texts = [s.input["text"] for s in samples("spam")[:20]]
    mixed: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/predict/wine", {"guests": ["Dahlia", "Stiffy"]}),
        ("POST", "/predict/wine", {"batch": [{"guests": []}, {"guests": ["Agatha"]}]}),
        ("POST", "/predict/digit", {"pixels": pixels}),
        ("POST", "/predict/digit", {"image": base64.b64encode(png.getvalue()).decode()}),
        ("GET", "/ready", None),
        ("GET", "/models", None),
        (
            "POST",
            "/v2/models/wine/infer",
            {"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 1] + [0] * 8}]},
        ),
    ]
    mixed += [("POST", "/predict/spam", {"text": text}) for text in texts[:5]]
    return mixed


def _load(server: Server, until: float | None, count: int | None, errors: list[str]) -> int:
    """Sends the mix until the time or the count is reached; returns how many requests it sent.
    Anything a request raises (a timeout, a reset connection) propagates: the test fails."""
    mix = _requests()
    sent = 0
    with server.client() as http:
        while (until is None or time.monotonic() < until) and (count is None or sent < count):
            method, path, body = mix[sent % len(mix)]
            response = http.request(method, path, json=body)
            if response.status_code != 200:
                errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            sent += 1
    return sent


@pytest.mark.slow
def test_a_minute_of_mixed_load_has_no_errors_and_no_leak(start_server: StartServer) -> None:
    server = start_server(NNSERVE_LOG_LEVEL="warning")
    errors: list[str] = []
    assert _load(server, None, WARM_UP_REQUESTS, errors) == WARM_UP_REQUESTS
    after_warm_up = server.status_kib() / 1024
    until = time.monotonic() + SOAK_SECONDS
    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(_load, server, until, None, errors) for _ in range(CLIENTS)]
        sent = [client.result(timeout=SOAK_SECONDS + 60) for client in clients]  # re-raises a client's error
    after_soak = server.status_kib() / 1024
    growth = (after_soak - after_warm_up) / after_warm_up
    print(
        f"\nsoak: {sum(sent)} requests in {SOAK_SECONDS} s from {CLIENTS} clients ({sent}), "
        f"{len(errors)} errors; RSS {after_warm_up:.1f} MB after warm-up, {after_soak:.1f} MB after "
        f"({growth:+.1%})"
    )
    assert not errors, errors[:5]
    assert min(sent) >= MIN_REQUESTS_PER_CLIENT, f"a client sent only {min(sent)} requests: not a soak"
    assert abs(growth) <= 0.10
    assert server.process.poll() is None and "Traceback" not in server.log()

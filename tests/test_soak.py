"""A minute of mixed load on every endpoint: no errors, and no memory growth (a leak check)."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import samples

from conftest import Server, StartServer

SOAK_SECONDS = 60
CLIENTS = 4
WARM_UP_REQUESTS = 3000


def _rss_mb(server: Server) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def _requests() -> list[tuple[str, str, dict | None]]:
    pixels = samples("digit")[0].input["pixels"]
    png = io.BytesIO()
    Image.fromarray((np.asarray(pixels).reshape(28, 28) * 255).astype(np.uint8)).resize((90, 90)).save(png, "PNG")
    texts = [s.input["text"] for s in samples("spam")[:20]]
    mixed: list[tuple[str, str, dict | None]] = [
        ("POST", "/predict/wine", {"guests": ["Dahlia", "Stiffy"]}),
        ("POST", "/predict/wine", {"batch": [{"guests": []}, {"guests": ["Agatha"]}]}),
        ("POST", "/predict/digit", {"pixels": pixels}),
        ("POST", "/predict/digit", {"image": base64.b64encode(png.getvalue()).decode()}),
        ("GET", "/ready", None),
        ("GET", "/models", None),
        ("POST", "/v2/models/wine/infer",
         {"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 1] + [0] * 8}]}),
    ]
    mixed += [("POST", "/predict/spam", {"text": text}) for text in texts[:5]]
    return mixed


def _load(server: Server, until: float | None, count: int | None, errors: list[str], sent: list[int]) -> None:
    mix = _requests()
    with server.client() as http:
        i = 0
        while (until is None or time.monotonic() < until) and (count is None or i < count):
            method, path, body = mix[i % len(mix)]
            response = http.request(method, path, json=body)
            if response.status_code != 200:
                errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            i += 1
        sent.append(i)


@pytest.mark.soak
def test_a_minute_of_mixed_load_has_no_errors_and_no_leak(start_server: StartServer) -> None:
    server = start_server(NNSERVE_LOG_LEVEL="warning")
    errors: list[str] = []
    sent: list[int] = []
    _load(server, None, WARM_UP_REQUESTS, errors, sent)
    after_warm_up = _rss_mb(server)
    until = time.monotonic() + SOAK_SECONDS
    clients = [threading.Thread(target=_load, args=(server, until, None, errors, sent)) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(SOAK_SECONDS + 60)
    after_soak = _rss_mb(server)
    growth = (after_soak - after_warm_up) / after_warm_up
    print(f"\nsoak: {sum(sent[1:])} requests in {SOAK_SECONDS} s from {CLIENTS} clients, {len(errors)} errors; "
          f"RSS {after_warm_up:.1f} MB after warm-up, {after_soak:.1f} MB after ({growth:+.1%})")
    assert not errors, errors[:5]
    assert abs(growth) <= 0.10

"""A client sends X-Request-Timeout: its own deadline, clamped by the server's, holds through image
decoding, the model's queue and the model. Past it the client hears 504 at once and the work
queued for it never runs (that burst is in tests/test_deadline.py, beside the server's own)."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from support.server import Server, StartServer
from support.slow_model import SlowModels

DELAY_MS = 1000


@pytest.fixture(scope="module")
def slow(start_server: StartServer, slow_models: SlowModels) -> Server:
    """Every inference takes a second; the server's own deadline is the default 10 s."""
    return start_server(NNSERVE_MODELS_DIR=str(slow_models(DELAY_MS)))


def test_the_server_deadline_caps_what_a_client_asks_for(
    start_server: StartServer, slow_models: SlowModels
) -> None:
    server = start_server(
        NNSERVE_MODELS_DIR=str(slow_models(DELAY_MS)), NNSERVE_INFERENCE_TIMEOUT_SECONDS="0.3"
    )
    started = time.perf_counter()
    response = httpx.post(
        f"{server.url}/predict/wine", json={"guests": []}, headers={"X-Request-Timeout": "3600"}, timeout=30
    )
    waited = time.perf_counter() - started
    assert response.status_code == 504 and "0.3 s" in response.json()["error"], response.text
    assert waited < 0.8


def test_a_generous_client_deadline_is_served(slow: Server) -> None:
    response = httpx.post(
        f"{slow.url}/predict/wine", json={"guests": []}, headers={"X-Request-Timeout": "5"}, timeout=30
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf-ish", "", "1e-400", "½"])
def test_a_malformed_client_deadline_is_400(client: httpx.Client, value: str) -> None:
    response = client.post(
        "/predict/wine", json={"guests": []}, headers={b"X-Request-Timeout": value.encode()}
    )
    assert response.status_code == 400, response.text
    assert "X-Request-Timeout" in response.json()["error"]


def _costly_batch(count: int) -> dict[str, list[dict[str, str]]]:
    """`count` 1024x1024 transparent PNGs with strokes everywhere: a few KB each, and the most
    decoding and normalisation work per pixel that was found (tests/test_request_budget.py)."""
    side = 1024
    pixels = np.zeros((side, side, 4), np.uint8)
    pixels[::7, :, 3] = 255
    png = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(png, "PNG", optimize=True)
    image = base64.b64encode(png.getvalue()).decode()
    return {"batch": [{"image": image}] * count}


def _cpu_seconds(server: Server) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def test_image_decoding_stops_at_the_client_deadline(start_server: StartServer) -> None:
    # Eight images (twice the default pixel budget), so that the one or two being decoded when
    # the deadline passes are a small part of the whole, whatever else the machine is doing.
    server = start_server(NNSERVE_MAX_REQUEST_PIXELS=str(8 << 20))
    body = _costly_batch(8)
    with server.client() as http:
        assert http.post("/predict/digit", json=body).status_code == 200  # warm
        cpu = _cpu_seconds(server)
        full = http.post("/predict/digit", json=body)
        full_cpu = _cpu_seconds(server) - cpu
        started = time.perf_counter()
        cut = http.post("/predict/digit", json=body, headers={"X-Request-Timeout": "0.01"})
        waited = time.perf_counter() - started
        time.sleep(0.3)  # the image being decoded at the deadline finishes
        cut_cpu = _cpu_seconds(server) - cpu - full_cpu
    print(
        f"\n8 costly images: {full_cpu * 1000:.0f} ms CPU in full; with a 10 ms deadline "
        f"{cut.status_code} after {waited * 1000:.0f} ms, {cut_cpu * 1000:.0f} ms CPU"
    )
    assert full.status_code == 200
    assert cut.status_code == 504 and "decoded" in cut.json()["error"], cut.text
    assert cut_cpu < full_cpu * 0.75, "decoding went on after the deadline"

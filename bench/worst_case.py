"""The worst requests a client can send within the service's limits, and the CPU each costs the
server: what bounds the work one request can cause (tests/test_request_budget.py holds the server
to WORST_REQUEST_CPU_S; `make bench` prints the figures).

The costliest image found per pixel is a transparent PNG with strokes all over it: a few KB on
the wire, it takes the alpha-flattening path, and the crop to the ink keeps all of it, so every
pixel is decoded, converted and resampled. The largest batch of them the limits allow is the
request pixel budget spread over the most images, or over the fewest images at the per-image
limit; squares, and strips (decoding also costs per row, so an image is charged the square
of its longer side: strips are refused sooner).
"""

from __future__ import annotations

import base64
import io
import json
import math
import statistics
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from service.config import Settings

WORST_REQUEST_CPU_S = 0.25
REPEATS = 5
Request = tuple[str, bytes]  # path, JSON body


def costly_png(width: int, height: int) -> bytes:
    """Transparent, with a stroke on every 7th row and column."""
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[::7, :, 3] = 255
    pixels[:, ::7, 3] = 255
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(out, "PNG", optimize=True)
    return out.getvalue()


def _images(count: int, width: int, height: int) -> bytes:
    image = base64.b64encode(costly_png(width, height)).decode()
    return json.dumps({"batch": [{"image": image}] * count}).encode()


def _fill(settings: Settings, item: dict[str, object]) -> bytes:
    """A batch of `item` as large as both the batch and the body limits allow."""
    one = len(json.dumps(item)) + 2
    count = min(settings.max_batch_size, (settings.max_body_bytes - 16) // one)
    return json.dumps({"batch": [item] * count}).encode()


def worst_requests(settings: Settings) -> dict[str, Request]:
    """The candidates for the worst request, each within every limit of `settings`."""
    side = settings.max_image_side
    at_limit = settings.max_request_pixels // (side * side)
    square = math.isqrt(settings.max_request_pixels // settings.max_batch_size)
    strip = max(1, settings.max_request_pixels // (side * side))  # strips as long as the side limit
    rng = np.random.default_rng(16)
    pixels = rng.random(784).round(3).tolist()
    words = " ".join(rng.choice(["free", "money", "meeting", "click", "lunch", "offer"], 700))
    batch = settings.max_batch_size
    return {
        f"{at_limit} images of {side}x{side}": ("/predict/digit", _images(at_limit, side, side)),
        f"{batch} images of {square}x{square}": ("/predict/digit", _images(batch, square, square)),
        f"{strip} images of 16x{side}": ("/predict/digit", _images(strip, 16, side)),
        f"{batch} images of 16x{square}": ("/predict/digit", _images(batch, 16, square)),
        "the largest batch of 784 pixels": ("/predict/digit", _fill(settings, {"pixels": pixels})),
        "the largest batch of emails": (
            "/predict/spam",
            _fill(settings, {"text": f"Subject: offer\n\n{words}"}),
        ),
    }


def server_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of the process and of its children (uvicorn's workers with
    NNSERVE_WORKERS) so far, in nanoseconds' resolution."""
    seconds = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        seconds += int((task / "schedstat").read_text().split()[0]) / 1e9
        seconds += sum(server_cpu_seconds(int(child)) for child in (task / "children").read_text().split())
    return seconds


def request_cpu_seconds(url: str, pid: int, request: Request, repeats: int = REPEATS) -> tuple[int, float]:
    """The status and the median server CPU of `request`, sent `repeats` times one at a time
    after one warm-up (the first batch of a size grows onnxruntime's arena once)."""
    path, body = request
    seconds = []
    with httpx.Client(base_url=url, timeout=60, headers={"Content-Type": "application/json"}) as http:
        status = http.post(path, content=body).status_code
        for _ in range(repeats):
            before = server_cpu_seconds(pid)
            status = http.post(path, content=body).status_code
            seconds.append(server_cpu_seconds(pid) - before)
    return status, statistics.median(seconds)


def report(url: str, pid: int, settings: Settings) -> list[tuple[str, int, int, float]]:
    """(request, body bytes, status, CPU seconds) for every candidate, printed as a table."""
    rows = []
    for name, request in worst_requests(settings).items():
        status, cpu = request_cpu_seconds(url, pid, request)
        rows.append((name, len(request[1]), status, cpu))
    print(f"\nThe worst requests within the limits, server CPU per request (median of {REPEATS}):\n")
    print("| request | body bytes | status | CPU ms |\n|---|---|---|---|")
    for name, size, status, cpu in rows:
        print(f"| {name} | {size:,} | {status} | {cpu * 1000:.0f} |")
    worst = max(rows, key=lambda row: row[3])
    print(f"\nWorst: {worst[0]}, {worst[3] * 1000:.0f} ms of CPU (bound {WORST_REQUEST_CPU_S * 1000:.0f} ms)")
    return rows

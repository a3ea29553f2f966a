"""A burst of the heaviest requests the limits allow, and some over them, all at once: the server
answers each with 200, 413, 422, 503 or 504 and its memory stays under the container limit of
deploy/k8s, so it is refused work, never killed for memory. What bounds it: bodies held at once
(NNSERVE_MAX_BYTES_IN_FLIGHT), rows queued per model (NNSERVE_MAX_QUEUED_ROWS), images decoded at
once (NNSERVE_DECODE_THREADS) and each one's size (NNSERVE_MAX_IMAGE_SIDE); README, "Reliability
and security", has the arithmetic."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter

import httpx
import yaml

from bench.worst_case import worst_requests
from service.config import Settings

from support.server import MODELS_DIR, REPO, StartServer

BURST = 400
SETTINGS = Settings()
Request = tuple[str, bytes]


def _container_limit_mb() -> float:
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()  # type: ignore[union-attr]  # the manifest is checked to hold Mi or Gi
    return int(number) * (1024 if unit == "Gi" else 1) * 1024 * 1024 / 1e6


def _versions(name: str) -> list[str]:
    return sorted((p.name for p in (MODELS_DIR / name).iterdir() if p.name.isdigit()), key=int)


def _heavy_requests() -> list[Request]:
    """The heaviest requests, on every version of each model: a client can pin any version, and
    each version's onnxruntime arena grows to the largest batch it has run."""
    zeros = (SETTINGS.max_body_bytes - 16) // 2
    rows = SETTINGS.max_batch_size
    spam = json.dumps({"batch": [{"text": "a"}] * rows}).encode()  # 256 bag-of-words rows from 3 KB
    image = {"name": "image", "shape": [rows, 1, 28, 28], "datatype": "FP32", "data": [0.5] * (rows * 784)}
    tensor = json.dumps({"inputs": [image]}).encode()
    return [
        *worst_requests(SETTINGS).values(),
        *((f"/predict/spam?version={version}", spam) for version in _versions("spam")),
        *((f"/v2/models/digit/versions/{version}/infer", tensor) for version in _versions("digit")),
        ("/predict/digit", b'{"pixels":[' + b",".join([b"0"] * zeros) + b"]}"),  # 422, after parsing
        ("/predict/digit", b'{"pixels":[' + b",".join([b"0"] * 2 * zeros) + b"]}"),  # 413, over the limit
    ]


async def _burst(url: str, requests: list[Request]) -> Counter[int]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=url, timeout=120, limits=limits, headers={"Content-Type": "application/json"}
    ) as http:

        async def one(i: int) -> int:
            path, body = requests[i % len(requests)]
            return (await http.post(path, content=body)).status_code

        return Counter(await asyncio.gather(*(one(i) for i in range(BURST))))


def test_a_burst_at_the_limits_is_refused_never_killed_for_memory(start_server: StartServer) -> None:
    server = start_server(NNSERVE_LOG_LEVEL="warning")
    requests = _heavy_requests()
    with server.client(headers={"Content-Type": "application/json"}) as http:
        for path, body in requests:  # each once: onnxruntime's arenas grow to the largest batch
            http.post(path, content=body)
    warmed = server.status_kib("VmRSS") * 1024 / 1e6
    statuses = asyncio.run(_burst(server.url, requests))
    peak = server.status_kib("VmHWM") * 1024 / 1e6
    limit = _container_limit_mb()
    print(
        f"\nburst of {BURST} heavy requests: {dict(sorted(statuses.items()))}; RSS {warmed:.0f} MB after "
        f"warm-up, peak {peak:.0f} MB; container limit {limit:.0f} MB"
    )
    assert peak < limit
    assert server.process.poll() is None
    assert set(statuses) <= {200, 413, 422, 503, 504}, statuses
    assert statuses[413] and statuses[503], "the burst did not reach the limits"
    with server.client() as http:
        assert http.get("/ready").status_code == 200

"""An operator runs NNSERVE_WORKERS=2 and scrapes /metrics: whichever worker answers, the counters
are the sums over both, per model included, and the service removes its metrics directory when it
stops."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict

from support.server import StartServer

SENT = {"wine": 40, "spam": 24, "digit": 16}
BODIES = {
    "wine": {"guests": ["Stiffy"]},
    "spam": {"text": "Lunch at noon?"},
    "digit": {"pixels": [0.0] * 784},
}
INVALID = 6  # unknown guests: 422
SCRAPES = 12


def _value(metrics: str, name: str, labels: str = "") -> float:
    series = f"{name}{{{labels}}}" if labels else name
    found = re.search("^" + re.escape(series) + r" (\S+)$", metrics, re.M)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


def _predictions_per_worker(directory: Path) -> dict[str, float]:
    """200s on /predict/* that each worker process wrote to its own counter file."""
    counted: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.removeprefix("counter_")
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]  # unannotated upstream
            _, sample, labels, _ = json.loads(key)
            if sample == "nnserve_requests_total" and labels["endpoint"].startswith("/predict/"):
                counted[pid] = counted.get(pid, 0.0) + value * (labels["status"] == "200")
    return counted


def test_two_workers_report_the_sums_of_both(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(NNSERVE_WORKERS="2", TMPDIR=str(tmp_path))
    deadline = time.monotonic() + 30
    while len(re.findall(r"Started server process \[(\d+)\]", server.log())) < 2:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    [directory] = tmp_path.glob("nnserve-metrics-*")
    for name, count in SENT.items():
        for _ in range(count):  # a new connection each time, so the kernel hands them to either worker
            assert httpx.post(f"{server.url}/predict/{name}", json=BODIES[name]).status_code == 200
    for _ in range(INVALID):
        assert httpx.post(f"{server.url}/predict/wine", json={"guests": ["Jeeves"]}).status_code == 422
    per_worker = _predictions_per_worker(directory)
    scrapes = [httpx.get(f"{server.url}/metrics").text for _ in range(SCRAPES)]
    print(f"\n2 workers, {sum(SENT.values())} predictions sent {SENT}: served {per_worker} per worker pid")
    assert len(per_worker) == 2 and all(per_worker.values()), "one worker served every request"
    for metrics in scrapes:
        for name, count in SENT.items():
            endpoint = f'endpoint="/predict/{name}"'
            assert (
                _value(metrics, "nnserve_requests_total", f'{endpoint},protocol="rest",status="200"') == count
            )
            model = f'model="{name}",version="{_latest(metrics, name)}"'
            assert _value(metrics, "nnserve_queue_wait_seconds_count", model) == count
            # Each worker warmed the model up once: that call is timed too.
            assert _value(metrics, "nnserve_inference_seconds_count", model) >= count + 2
            assert _value(metrics, "nnserve_batch_size_sum", model) == count + 2
        assert (
            _value(metrics, "nnserve_requests_total", 'endpoint="/predict/wine",protocol="rest",status="422"')
            == INVALID
        )
        assert _value(metrics, "nnserve_requests_in_flight") >= 1  # the scrape itself
    assert server.stop() == 0
    assert not list(tmp_path.glob("nnserve-metrics-*")), "the metrics directory was left behind"


def _latest(metrics: str, name: str) -> str:
    versions: list[str] = re.findall(rf'nnserve_model_ready\{{model="{name}",version="(\d+)"\}} 1', metrics)
    return max(versions, key=int)

"""An operator scrapes /metrics with Prometheus: every metric is there with sane values."""

from __future__ import annotations

import re

import pytest

from support.inprocess import MakeClient

REQUESTS = 25


def _value(metrics: str, name: str, labels: str = "") -> float:
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$"
    found = re.search(pattern, metrics, re.M)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


@pytest.fixture(scope="module")
def scraped(make_client: MakeClient) -> str:
    http = make_client()  # its own app: counters start at zero
    for _ in range(REQUESTS):
        assert http.post("/predict/wine", json={"guests": ["Stiffy"]}).status_code == 200
    assert http.post("/predict/wine", json={"guests": ["Nobody"]}).status_code == 422
    return http.get("/metrics").text


def test_requests_are_counted_by_endpoint_and_status(scraped: str) -> None:
    assert (
        _value(scraped, "nnserve_requests_total", 'endpoint="/predict/wine",protocol="rest",status="200"')
        == REQUESTS
    )
    assert (
        _value(scraped, "nnserve_requests_total", 'endpoint="/predict/wine",protocol="rest",status="422"')
        == 1
    )
    assert (
        _value(scraped, "nnserve_request_seconds_count", 'endpoint="/predict/wine",protocol="rest"')
        == REQUESTS + 1
    )
    assert (
        0
        < _value(scraped, "nnserve_request_seconds_sum", 'endpoint="/predict/wine",protocol="rest"')
        < REQUESTS
    )


def test_inference_batching_and_queueing_are_observed(scraped: str) -> None:
    labels = 'model="wine",version="1"'
    calls = _value(scraped, "nnserve_inference_seconds_count", labels)
    assert calls >= REQUESTS  # plus the warm-up
    assert 0 < _value(scraped, "nnserve_inference_seconds_sum", labels) < calls * 0.1
    assert _value(scraped, "nnserve_batch_size_sum", labels) >= REQUESTS
    assert _value(scraped, "nnserve_queue_wait_seconds_count", labels) == REQUESTS


def test_in_flight_and_model_status_are_exposed(scraped: str) -> None:
    assert _value(scraped, "nnserve_requests_in_flight") >= 1  # the scrape itself
    for model in ("wine", "spam", "digit"):
        assert _value(scraped, "nnserve_model_ready", f'model="{model}",version="1"') == 1.0

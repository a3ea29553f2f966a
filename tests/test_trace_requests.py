"""An operator turns on OpenTelemetry traces with the standard OTEL_* variables and follows a
request through nnserve: one server span per request with its stages as children, the client's
W3C trace continued, spans sent over OTLP/HTTP to a real receiver, a collector that is down or
stalled costing requests nothing, and, with the variables unset, nothing of the SDK loaded."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from samples import latest_version, samples
from v2_inputs import tensors

from service.app import create_app
from service.config import Settings
from service.observability.exporters import exporter_names
from service.observability.tracing import TracingUnavailable

from support.inprocess import in_process_client
from support.server import MODELS_DIR, REPO, StartServer, clean_environment, free_port, is_json_object
from support.tools import require_module

if TYPE_CHECKING:
    from support.otlp import Receiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
STAGES = ["parse", "preprocess", "queue wait", "inference", "respond"]
GRPC_STAGES = ["queue wait", "inference", "respond"]  # a gRPC message arrives parsed, as tensors


class Traced:
    """An in-process app whose spans go to the SDK's in-memory exporter."""

    def __init__(self, client: httpx.Client, exporter: Any, app: Any) -> None:
        self.client = client
        self.exporter = exporter
        self.app = app

    def tree(self, response: httpx.Response) -> tuple[Any, list[Any]]:
        """The server span of the request that got `response` (found by its request id) and its
        children in the order they started."""
        self.app.tracer.flush()
        request_id = response.headers["x-request-id"]
        spans = self.exporter.get_finished_spans()
        (server,) = [s for s in spans if s.attributes.get("nnserve.request_id") == request_id]
        children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
        return server, sorted(children, key=lambda s: s.start_time)


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    require_module("opentelemetry.sdk")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    app = create_app(Settings(models_dir=MODELS_DIR, log_level="warning"), span_exporter=exporter)
    with in_process_client(app) as client:
        yield Traced(client, exporter, app)


def _names(children: list[Any]) -> list[str]:
    return [child.name for child in children]


def _predict_body(name: str) -> dict[str, Any]:
    return samples(name)[0].input


@pytest.mark.parametrize("name", ["wine", "spam", "digit"])
def test_a_prediction_is_a_server_span_with_its_stages(traced: Traced, name: str) -> None:
    response = traced.client.post(f"/predict/{name}", json=_predict_body(name))
    assert response.status_code == 200
    server, children = traced.tree(response)
    assert server.name == f"POST /predict/{name}"
    assert server.kind.name == "SERVER"
    assert server.attributes["http.route"] == f"/predict/{name}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["nnserve.model.name"] == name
    assert server.attributes["nnserve.model.version"] == latest_version(name)
    assert "error.type" not in server.attributes
    assert _names(children) == STAGES
    inference = children[3]
    assert inference.attributes["nnserve.batch.size"] == 1
    for child in children:
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    # The stages follow one another: each starts where the one before it ended.
    for before, after in zip(children, children[1:], strict=False):
        assert after.start_time >= before.end_time


def test_a_v2_infer_is_a_server_span_with_its_stages(traced: Traced) -> None:
    feeds, _ = tensors()["wine"]
    request = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
            for name, rows in feeds.items()
        ]
    }
    response = traced.client.post("/v2/models/wine/versions/1/infer", json=request)
    assert response.status_code == 200, response.text
    server, children = traced.tree(response)
    assert server.name == "POST /v2/models/{name}/versions/{version}/infer"
    assert server.attributes["nnserve.model.name"] == "wine"
    assert server.attributes["nnserve.model.version"] == 1
    assert _names(children) == STAGES
    assert children[3].attributes["nnserve.batch.size"] == 2


def test_an_explanation_has_a_stage_for_each_network_run(traced: Traced) -> None:
    response = traced.client.post("/explain/digit", json=_predict_body("digit"))
    assert response.status_code == 200
    server, children = traced.tree(response)
    assert server.name == "POST /explain/digit"
    names = _names(children)
    assert names[:2] == ["parse", "preprocess"] and names[-1] == "respond"
    runs = [child for child in children if child.name == "inference"]
    assert len(runs) == names.count("queue wait") >= 1
    # The occlusion map runs the network on many variants of the one image at once.
    assert max(run.attributes["nnserve.batch.size"] for run in runs) > 1


def test_an_error_answer_names_its_code(traced: Traced) -> None:
    response = traced.client.post("/predict/wine", json={"guests": 3})
    assert response.status_code == 422
    server, children = traced.tree(response)
    assert server.attributes["http.response.status_code"] == 422
    assert server.attributes["error.type"] == response.json()["code"] == "invalid_input"
    assert server.status.status_code.name == "UNSET"  # a client's mistake is not the server's error
    assert _names(children) == ["parse", "respond"]

    response = traced.client.post("/v2/models/nosuch/infer", json={"inputs": []})
    assert response.status_code == 404
    server, _ = traced.tree(response)
    assert server.attributes["error.type"] == "model_not_found"


def test_a_server_error_marks_the_span_failed(traced: Traced) -> None:
    response = traced.client.post(
        "/predict/wine", json={"guests": []}, headers={"X-Request-Timeout": "0.000001"}
    )
    assert response.status_code == 504
    server, _ = traced.tree(response)
    assert server.attributes["error.type"] == "deadline_exceeded"
    assert server.status.status_code.name == "ERROR"


def test_a_probe_is_one_span(traced: Traced) -> None:
    response = traced.client.get("/health")
    assert response.status_code == 200
    server, children = traced.tree(response)
    assert server.name == "GET /health"
    assert children == []


def test_the_clients_trace_is_continued(traced: Traced) -> None:
    response = traced.client.post(
        "/predict/wine",
        json={"guests": ["Dahlia"]},
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"},
    )
    server, children = traced.tree(response)
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.parent.is_remote
    assert server.context.trace_state.get("vendor") == "opaque"
    assert {format(child.context.trace_id, "032x") for child in children} == {TRACE_ID}


def test_an_unsampled_trace_records_nothing(traced: Traced) -> None:
    """The client's sampled flag off: the default parent-based sampler follows it."""
    before = len(traced.exporter.get_finished_spans())
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    response = traced.client.post(
        "/predict/wine", json={"guests": ["Dahlia"]}, headers={"traceparent": unsampled}
    )
    assert response.status_code == 200
    traced.app.tracer.flush()
    assert len(traced.exporter.get_finished_spans()) == before


def test_traces_are_off_unless_the_variables_ask() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert (
        exporter_names({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == []
    )
    assert exporter_names({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) == []


_FRESH_APP = """
import sys
from service.app import create_app
from service.config import Settings
app = create_app(Settings(models_dir={models!r}))
sdk = ("opentelemetry.sdk", "opentelemetry.exporter", "service.observability.otel")
loaded = sorted(m for m in sys.modules if m.startswith(sdk))
print(app.tracer, loaded)
"""


def _fresh_interpreter(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean_environment(), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_off_by_default_the_sdk_is_never_imported() -> None:
    """FastAPI itself imports the OpenTelemetry API (a dependency of it); the SDK, the exporters
    and nnserve's own tracer stay unloaded, and the guard holds no tracer."""
    run = _fresh_interpreter(_FRESH_APP.format(models=str(MODELS_DIR)))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None []"


def test_traces_asked_for_without_the_packages_is_a_clear_start_up_error() -> None:
    code = "import sys\nsys.modules['opentelemetry.sdk'] = None\n" + _FRESH_APP.format(models=str(MODELS_DIR))
    run = _fresh_interpreter(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert run.returncode != 0
    assert "TracingUnavailable" in run.stderr
    assert "pip install 'nnserve[tracing]'" in run.stderr


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "otlp or console"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "2", "ratio from 0 to 1"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/protobuf or grpc"),
    ],
)
def test_a_variable_nnserve_cannot_honour_is_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    require_module("opentelemetry.sdk")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv(variable, value)
    with pytest.raises(TracingUnavailable, match=says):
        create_app(Settings(models_dir=MODELS_DIR, log_level="warning"))


def test_otlp_over_grpc_without_its_exporter_is_a_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gRPC exporter is not part of the [tracing] extra; a missing module is made missing."""
    require_module("opentelemetry.sdk")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(TracingUnavailable, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        create_app(Settings(models_dir=MODELS_DIR, log_level="warning"))


def _otlp_receiver() -> AbstractContextManager[Receiver]:
    """support/otlp.py decodes with opentelemetry-proto's messages: imported once the package is
    known to be there, so that its absence is require_module's clear skip (or CI's failure)."""
    require_module("opentelemetry.proto")
    from support.otlp import otlp_receiver

    return otlp_receiver()


def _digit_pixels() -> dict[str, Any]:
    return _predict_body("digit")


def test_spans_reach_a_collector_over_otlp_http(start_server: StartServer) -> None:
    """A real server whose OTLP/HTTP exporter sends to a receiver on localhost: the spans of real
    requests arrive, parented by the client's traceparent, and the access line names the trace."""
    with _otlp_receiver() as receiver:
        server = start_server(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_SERVICE_NAME="nnserve-under-test",
            OTEL_BSP_SCHEDULE_DELAY="50",
        )
        with server.client() as client:
            response = client.post(
                "/predict/digit", json=_digit_pixels(), headers={"traceparent": TRACEPARENT}
            )
            assert response.status_code == 200
            probe = client.get(
                "/v2/health/live", headers={"traceparent": TRACEPARENT.replace(TRACE_ID[:4], "1234")}
            )
            assert probe.status_code == 200
        spans = receiver.wait_for(TRACE_ID, count=6)
        (root,) = [span for span in spans if span.name == "POST /predict/digit"]
        assert root.parent_span_id == PARENT_ID
        assert root.service_name == "nnserve-under-test"
        assert root.attributes["nnserve.model.name"] == "digit"
        assert root.attributes["http.response.status_code"] == 200
        children = {span.name: span for span in spans if span.parent_span_id == root.span_id}
        assert sorted(children) == sorted(STAGES)
        assert children["inference"].attributes["nnserve.batch.size"] == 1
        (probe_span,) = receiver.wait_for("1234" + TRACE_ID[4:], count=1)
        assert probe_span.name == "GET /v2/health/live"
        log = server.wait_for_log(f'"trace_id":"{TRACE_ID}"')
        assert f'"trace_id":"{TRACE_ID}"' in log
        server.stop()


def _median_seconds(client: httpx.Client, requests: int = 15) -> float:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        assert client.post("/predict/wine", json={"guests": ["Dahlia"]}).status_code == 200
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_a_stalled_collector_slows_no_request_and_drops_are_counted(start_server: StartServer) -> None:
    """The receiver answers, then holds every export: requests take no longer than while it
    answered (an export on the request's path would wait for it, here for 30 s), the queue (4
    spans here) fills, and the spans that found no room are counted in
    nnserve_trace_spans_dropped_total."""
    with _otlp_receiver() as receiver:
        server = start_server(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_MAX_QUEUE_SIZE="4",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4",
            OTEL_BSP_SCHEDULE_DELAY="10",
        )
        with server.client() as client:
            quiet = _median_seconds(client)
            receiver.stalled.set()
            stalled = _median_seconds(client)
            metrics = client.get("/metrics").text
        print(
            f"\nmedian request: {quiet * 1000:.1f} ms, collector answering; {stalled * 1000:.1f} ms, stalled"
        )
        assert stalled <= 3 * quiet + 0.05
        dropped = [
            line for line in metrics.splitlines() if line.startswith("nnserve_trace_spans_dropped_total")
        ]
        assert dropped and float(dropped[0].split()[-1]) > 0, metrics
        receiver.released.set()
        assert server.stop() == 0


def test_a_collector_that_is_down_fails_no_request(start_server: StartServer) -> None:
    """Its failures are logged in the service's JSON lines; the last export at the stop gives up
    after the exporter's own timeout (OTEL_EXPORTER_OTLP_TIMEOUT, shortened here)."""
    server = start_server(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_BSP_SCHEDULE_DELAY="10",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    with server.client() as client:
        for _ in range(10):
            assert client.post("/predict/wine", json={"guests": ["Dahlia"]}).status_code == 200
    assert server.stop() == 0
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert all(is_json_object(line) for line in lines), lines
    failures = [
        entry
        for entry in map(json.loads, lines)
        if entry["logger"].startswith("opentelemetry.exporter") and "export" in entry["message"]
    ]
    assert failures and {entry["level"] for entry in failures} <= {"warning", "error"}, lines


def test_the_console_exporter_writes_one_json_line_a_span(start_server: StartServer) -> None:
    server = start_server(OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="50")
    with server.client() as client:
        response = client.post(
            "/predict/wine", json={"guests": ["Dahlia"]}, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200
    log = server.wait_for_log('"name": "respond"')
    lines = [line for line in log.splitlines() if line.strip()]
    assert all(is_json_object(line) for line in lines), lines
    spans = [json.loads(line) for line in lines if '"context"' in line]
    ours = [span for span in spans if span["context"]["trace_id"] == f"0x{TRACE_ID}"]
    assert sorted(span["name"] for span in ours) == sorted(["POST /predict/wine", *STAGES])


def test_a_grpc_call_is_a_server_span_continuing_the_clients_trace(start_server: StartServer) -> None:
    """tritonclient.grpc sends the traceparent as call metadata: ModelInfer is one server span
    named by the RPC, with the model's stages under it, parented by the client's span."""
    grpcclient = require_module("tritonclient.grpc")
    with _otlp_receiver() as receiver:
        server = start_server(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="50")
        client = grpcclient.InferenceServerClient(url=server.grpc_address)
        guests = grpcclient.InferInput("guests", [1, 10], "FP32")
        guests.set_data_from_numpy(np.zeros((1, 10), dtype=np.float32))
        client.infer("wine", [guests], headers={"traceparent": TRACEPARENT})
        client.close()
        spans = receiver.wait_for(TRACE_ID, count=1 + len(GRPC_STAGES))
        (root,) = [span for span in spans if span.name == "inference.GRPCInferenceService/ModelInfer"]
        children = [span for span in spans if span.parent_span_id == root.span_id]
        assert sorted(span.name for span in children) == sorted(GRPC_STAGES)
        assert root.parent_span_id == PARENT_ID
        assert root.attributes["rpc.system"] == "grpc" and root.attributes["rpc.method"] == "ModelInfer"
        assert root.attributes["rpc.grpc.status_code"] == 0
        assert root.attributes["nnserve.model.name"] == "wine"
        assert f'"trace_id":"{TRACE_ID}"' in server.wait_for_log(f'"trace_id":"{TRACE_ID}"')
        server.stop()

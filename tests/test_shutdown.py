"""SIGTERM while requests keep arriving, as an orchestrator and a load balancer see it: /ready turns
503 at once, requests are still accepted and served for NNSERVE_DRAIN_SECONDS (with
`Connection: close`, so clients reconnect elsewhere), then new connections are refused, what is in
flight finishes, and the process exits 0 within NNSERVE_SHUTDOWN_GRACE_SECONDS. Work that
outlives the grace is cut off with a 503 the client can retry elsewhere, and the exit still comes
on time."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from service.admission import drain

from support.server import Server, StartServer
from support.slow_model import SlowModels


@dataclass
class Shutdown:
    answers: list[httpx.Response]
    refused_after_sigterm: bool
    exit_code: int
    seconds: float  # from SIGTERM to the process's exit
    one_call: float  # a request alone just before, timed: the slow model's speed on this machine now


def _sigterm_during_slow_requests(
    start_server: StartServer,
    slow_models: SlowModels,
    *,
    slow_ms: int,
    grace_s: float,
    in_flight: int,
) -> Shutdown:
    """Starts a server without a drain whose every inference takes `slow_ms`, one at a time,
    sends `in_flight` requests, and SIGTERMs it while the first is inside onnxruntime and the
    rest wait."""
    server = start_server(
        NNSERVE_MODELS_DIR=str(slow_models(slow_ms)),
        NNSERVE_BATCHING="false",
        NNSERVE_SHUTDOWN_GRACE_SECONDS=str(grace_s),
        NNSERVE_DRAIN_SECONDS="0",
    )

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/predict/wine", json={"guests": []}, timeout=30)

    started = time.monotonic()
    assert call(0).status_code == 200
    one_call = time.monotonic() - started
    with ThreadPoolExecutor(in_flight) as pool:
        futures = [pool.submit(call, i) for i in range(in_flight)]
        # All sent (the scrape that asks is in flight too), the first inside onnxruntime: early
        # in the call, so that it is still inside it at the grace.
        server.wait_for_metrics(
            lambda value: (
                value("nnserve_requests_in_flight") >= in_flight + 1
                and value("nnserve_inferences_running", model="wine") >= 1
            ),
            f"{in_flight} requests in flight, one inside onnxruntime",
        )
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        refused = False
        while server.process.poll() is None and time.monotonic() < signalled + 5:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", server.port)) != 0:
                    refused = server.process.poll() is None  # by the live process, its work in flight
                    break
            time.sleep(0.02)
        answers = [f.result() for f in futures]
    exit_code = server.process.wait(grace_s + 30)
    result = Shutdown(answers, refused, exit_code, time.monotonic() - signalled, one_call)
    print(
        f"\nshutdown with {in_flight} x {slow_ms} ms in flight, grace {grace_s} s: answers "
        f"{[a.status_code for a in answers]}, new connection refused: {refused}, "
        f"exit {exit_code} after {result.seconds:.2f} s (one request alone: {one_call:.2f} s)"
    )
    assert "Traceback" not in server.log()
    return result


def test_sigterm_without_a_drain_finishes_in_flight_requests_and_exits_0(
    start_server: StartServer, slow_models: SlowModels
) -> None:
    slow_ms, in_flight, grace_s = 400, 4, 20
    result = _sigterm_during_slow_requests(
        start_server, slow_models, slow_ms=slow_ms, grace_s=grace_s, in_flight=in_flight
    )
    assert [a.status_code for a in result.answers] == [200] * in_flight
    assert result.refused_after_sigterm, "a new connection was accepted after SIGTERM"
    assert result.exit_code == 0
    # Finishing takes as long as the work in flight (timed here, not the model's nominal
    # speed: a busy machine runs it slower, and unevenly, hence twice), not the whole grace.
    assert result.seconds < 2 * in_flight * result.one_call + 2 < grace_s


def test_work_past_the_grace_period_gets_503_and_the_exit_is_on_time(
    start_server: StartServer, slow_models: SlowModels
) -> None:
    slow_ms, in_flight, grace_s = 1500, 3, 0.5
    result = _sigterm_during_slow_requests(
        start_server, slow_models, slow_ms=slow_ms, grace_s=grace_s, in_flight=in_flight
    )
    for answer in result.answers:
        assert answer.status_code == 503 and answer.json()["code"] == "shutting_down", answer.text
        assert answer.headers["Retry-After"] == "1"
    assert result.refused_after_sigterm
    assert result.exit_code == 0
    # A call already inside onnxruntime cannot be interrupted: the exit waits for that one only.
    # (Twice one call, timed here, for a busy machine's unevenness: still less than the three.)
    assert result.seconds < grace_s + 2 * result.one_call < in_flight * result.one_call


DRAIN_S = 2.5  # long enough for every client to be served during it on a busy machine
GRACE_S = 8.0
SLOW_MS = 300
CLIENTS = 3


REFUSED = "refused"


@dataclass
class Outcome:
    sent: float  # seconds after SIGTERM (negative: before it)
    status: int | str  # the HTTP status; REFUSED; or the name of another transport error
    connection: str = ""
    answered: float = 0.0  # seconds after SIGTERM


@dataclass
class Traffic:
    """Requests sent throughout, each on a new connection, as a balancer's would be."""

    server: Server
    signalled: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    probes: list[Outcome] = field(default_factory=list)
    predictions: list[Outcome] = field(default_factory=list)

    def _send(self, method: str, path: str, body: object = None) -> Outcome:
        sent = time.monotonic() - self.signalled
        try:
            response = httpx.request(method, f"{self.server.url}{path}", json=body, timeout=30)
        except httpx.ConnectError:
            return Outcome(sent, REFUSED, answered=time.monotonic() - self.signalled)
        except httpx.TransportError as error:  # a connection cut off mid-request: a failure
            return Outcome(sent, type(error).__name__, answered=time.monotonic() - self.signalled)
        answered = time.monotonic() - self.signalled
        return Outcome(sent, response.status_code, response.headers.get("connection", ""), answered)

    def probe(self) -> None:
        while not self.stop.is_set():
            self.probes.append(self._send("GET", "/ready"))
            time.sleep(0.05)

    def predict(self) -> None:
        while not self.stop.is_set():
            self.predictions.append(self._send("POST", "/predict/wine", {"guests": ["Stiffy"]}))


def test_a_load_balancer_sees_the_drain_and_no_request_fails(
    start_server: StartServer, slow_models: SlowModels
) -> None:
    server = start_server(
        NNSERVE_DRAIN_SECONDS=str(DRAIN_S),
        NNSERVE_SHUTDOWN_GRACE_SECONDS=str(GRACE_S),
        NNSERVE_MODELS_DIR=str(slow_models(SLOW_MS)),
    )
    traffic = Traffic(server, signalled=time.monotonic() + 1.0)
    threads = [threading.Thread(target=traffic.probe)]
    threads += [threading.Thread(target=traffic.predict) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, traffic.signalled - time.monotonic()))
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(GRACE_S + 10)
    exited = time.monotonic() - traffic.signalled
    time.sleep(0.5)  # requests sent after the exit: refused
    traffic.stop.set()
    for thread in threads:
        thread.join(30)

    during = [o for o in traffic.predictions if 0.1 < o.sent < DRAIN_S - SLOW_MS / 1000]
    # Accepted during the drain and still being served when it ended (when new connections stop).
    # One sent just before the end may connect after it (a client takes a while to set up) and
    # be refused: that is not a request in flight.
    at_close = [o for o in traffic.predictions if 0 < o.sent < DRAIN_S < o.answered and o.status != REFUSED]
    # The listener closes on the event loop's first tick past the drain (every 0.1 s).
    after = [o for o in traffic.predictions if o.sent > DRAIN_S + 0.5]
    first_probe_after = min((o for o in traffic.probes if o.sent > 0), key=lambda o: o.sent)
    print(
        f"\ndrain {DRAIN_S} s, {CLIENTS} clients and a prober: {len(traffic.predictions)} predictions sent, "
        f"{sum(o.status == 200 for o in traffic.predictions)} x 200, "
        f"{sum(o.status == REFUSED for o in traffic.predictions)} refused; "
        f"{sum(o.status == 200 for o in during)} served during the drain, {len(at_close)} in flight as "
        f"it ended; /ready {first_probe_after.status} "
        f"{first_probe_after.sent * 1000:.0f} ms after SIGTERM; exit {exit_code} after {exited:.2f} s"
    )
    assert len([o for o in traffic.predictions if o.sent < 0]) >= CLIENTS, "too little traffic before SIGTERM"
    assert exit_code == 0 and exited < GRACE_S
    assert "Traceback" not in server.log()
    # The balancer sees it at once: readiness is 503 (then refused), never 200 again. A probe sent
    # just before SIGTERM may be handled after it, so "before" means answered before the signal.
    assert all(o.status == 200 for o in traffic.probes if o.answered < 0)
    # (The first probe after it waits for the one before to be answered: on a busy machine a while.)
    assert first_probe_after.status == 503 and first_probe_after.sent < 0.5
    assert not [o for o in traffic.probes if o.sent > 0 and o.status not in (503, REFUSED)]
    # Clients see nothing fail: each request is answered 200 or, once the drain is over, refused.
    assert all(o.status in (200, REFUSED) for o in traffic.predictions), traffic.predictions
    assert len(during) >= CLIENTS and all(o.status == 200 and o.connection == "close" for o in during)
    assert at_close and all(o.status == 200 for o in at_close), "requests in flight were cut off"
    assert after and all(o.status == REFUSED for o in after), "connections accepted after the drain"


def _storm(server: Server, second: signal.Signals, gap: float, count: int) -> None:
    """SIGTERM, then `count` more signals `gap` seconds apart (0: as fast as they can be sent)."""
    server.process.send_signal(signal.SIGTERM)
    for _ in range(count):
        if gap:
            time.sleep(gap)
        if server.process.poll() is not None:
            return
        server.process.send_signal(second)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_more_signals_during_the_drain_still_end_in_exit_0_within_the_grace(
    start_server: StartServer, second: signal.Signals
) -> None:
    """A signal handler runs between any two bytecodes of the main thread, inside whatever that
    thread was doing, the first handler included. One that takes a lock can deadlock there, and
    the process then hangs for good: the grace bounds every run here."""
    grace_s = 6.0
    for gap in (0.0, 0.0, 0.0005, 0.002, 0.01, 0.05):
        server = start_server(NNSERVE_DRAIN_SECONDS="2", NNSERVE_SHUTDOWN_GRACE_SECONDS=str(grace_s))
        with httpx.Client(base_url=server.url) as client:
            assert client.post("/predict/wine", json={"guests": ["Stiffy"]}).status_code == 200
        signalled = time.monotonic()
        _storm(server, second, gap, count=300 if gap == 0 else 40)
        try:
            exit_code = server.process.wait(grace_s + 5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            pytest.fail(f"{second.name}s {gap} s after SIGTERM: still running past the grace")
        assert exit_code == 0, f"{second.name}s {gap} s apart: exit {exit_code}\n{server.log()}"
        assert time.monotonic() - signalled < grace_s + 1
        assert "Traceback" not in server.log()


def test_while_draining_readiness_is_503_and_every_answer_closes_its_connection(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What SIGTERM sets (service/admission/drain.py), in process: balancers and probes turn
    away (both readiness paths 503), liveness holds, and requests are still served, each with
    `Connection: close` so that its client reconnects elsewhere."""
    assert client.get("/ready").status_code == 200
    assert "close" not in client.post("/predict/wine", json={"guests": ["Stiffy"]}).headers.get(
        "connection", ""
    )
    monkeypatch.setattr(drain.draining, "_set", True)
    assert client.get("/ready").status_code == client.get("/v2/health/ready").status_code == 503
    assert client.get("/health").status_code == 200
    served = client.post("/predict/wine", json={"guests": ["Stiffy"]})
    assert served.status_code == 200 and served.headers["connection"] == "close"

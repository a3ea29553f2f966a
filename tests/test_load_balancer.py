"""nginx with deploy/nginx.conf (as compose runs it) in front of two replicas: requests are spread
over both, and when one replica is killed with SIGKILL mid-stream every request still gets a
correct 200, in-flight POSTs included."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.server import REPO, Server, StartServer, free_port
from support.tools import require_module, require_tool

REQUESTS = 400
KILL_AT = 150  # the request index that kills replica 0 first, while other threads have theirs in flight
THREADS = 4
WINE_PARTY = {"guests": ["Dahlia", "Stiffy"]}
WINE_BOTTLES = 4.3
SERVED = "POST /predict/wine 200"
ADMIN_KEY = "balancer-admin-key"
ADMIN_CALLS = 12  # of each kind: the two replicas take turns


def _written_on_loopback(conf: str, listen: int, grpc_listen: int, tmp_path: Path) -> Path:
    """An nginx configuration listening on loopback ports of the test's, with its temporary
    files in the test's folder, written there."""
    assert "listen 8000;" in conf and "listen 8081 http2;" in conf
    conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{listen};")
    conf = conf.replace("listen 8081 http2;", f"listen 127.0.0.1:{grpc_listen} http2;")
    path = tmp_path / "nginx.conf"
    path.write_text(conf.replace("/tmp/", f"{tmp_path}/"))
    return path


def local_conf(tmp_path: Path, replicas: list[Server], listen: int, grpc_listen: int) -> Path:
    """deploy/nginx.conf with only the addresses changed: each `server api:PORT` upstream line
    becomes one line per loopback replica (same parameters; 8000 the replica's HTTP port, 8081
    its gRPC port), the listen ports free loopback ports, and /tmp/ a directory of this test.
    Everything else (retries, timeouts) is what compose runs."""
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    for compose_port, ports in ((8000, [r.port for r in replicas]), (8081, [r.grpc_port for r in replicas])):
        server_line = re.search(rf"^(\s*)server api:{compose_port}( [^;]*)?;$", conf, re.MULTILINE)
        assert server_line, f"deploy/nginx.conf has one `server api:{compose_port} ...;` upstream line"
        indent, parameters = server_line.group(1), server_line.group(2) or ""
        lines = "\n".join(f"{indent}server 127.0.0.1:{port}{parameters};" for port in ports)
        conf = conf.replace(server_line.group(0), lines)
    return _written_on_loopback(conf, listen, grpc_listen, tmp_path)


def test_a_replica_killed_mid_stream_costs_no_request(
    start_server: StartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    replicas = [start_server(), start_server()]
    listen, grpc_listen = free_port(), free_port()
    conf = local_conf(tmp_path, replicas, listen, grpc_listen)
    nginx_log = tmp_path / "nginx.log"
    with nginx_log.open("wb") as log:
        balancer = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=10) as http:
            wait_until_ready(http, balancer, nginx_log)
            health: Any = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{grpc_listen}"))
            serving = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert serving == health_pb2.HealthCheckResponse.SERVING, "gRPC passes nginx too"
            before_kill = [served(replica) for replica in replicas]

            def predict(index: int) -> str | None:
                """None for a correct answer, else what was wrong."""
                if index == KILL_AT:
                    replicas[0].stop(signal.SIGKILL)
                try:
                    response = http.post("/predict/wine", json=WINE_PARTY)
                except httpx.HTTPError as error:
                    return f"#{index}: {error!r}"
                if response.status_code != 200 or abs(response.json()["bottles"] - WINE_BOTTLES) > 0.2:
                    return f"#{index}: {response.status_code} {response.text}"
                return None

            with ThreadPoolExecutor(THREADS) as pool:
                outcomes = list(pool.map(predict, range(REQUESTS), timeout=120))
    finally:
        balancer.terminate()
        balancer.wait(10)

    failures = [outcome for outcome in outcomes if outcome]
    per_replica = [served(replica) - before for replica, before in zip(replicas, before_kill, strict=True)]
    report = (
        f"load balancer: {len(outcomes)} predictions from {THREADS} threads, replica 0 killed "
        f"(SIGKILL) at #{KILL_AT}; served by replica 0 / 1: {per_replica[0]} / {per_replica[1]}; "
        f"{len(failures)} failed"
    )
    with capsys.disabled():
        print(f"\n{report}")
    assert replicas[0].process.returncode == -signal.SIGKILL, report
    assert not failures, f"{report}: {failures[:5]}\nnginx log:\n{nginx_log.read_text()}"
    assert per_replica[0] > 0 and per_replica[1] > 0, f"requests were not spread: {report}"
    assert f"127.0.0.1:{replicas[0].port}" in nginx_log.read_text(), (
        f"nginx never saw replica 0 fail: {report}"
    )


def served(replica: Server) -> int:
    """Predictions the replica answered with 200, from its access log."""
    return replica.log().count(SERVED)


def wait_until_ready(http: httpx.Client, balancer: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if balancer.poll() is not None:
            pytest.fail(f"nginx exited with {balancer.returncode}:\n{log.read_text()}")
        try:
            if http.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"nginx did not answer 200 on /ready in 15s:\n{log.read_text()}")


class Unanswering:
    """A replica that dies with the request in hand: it accepts each connection, reads what
    nginx sends and closes it without a word, as a replica SIGKILLed mid-request does. It counts
    the connections on which a request reached it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    if connection.recv(65536):
                        self.received += 1
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def swarm_conf(tmp_path: Path, dead: Unanswering, live: Server, listen: int, grpc_listen: int) -> Path:
    """deploy/swarm/nginx.conf with the replicas Docker's DNS would give it (`$api`) replaced by
    two fixed ones, each taking turns, a dead one first: for REST the replica that dies holding
    the request, for gRPC a port nobody listens on. Every location's retry and timeout
    directives are what the swarm runs. nginx forgets a failure with the next request (max_fails
    0), as with the addresses it resolves for each request in the swarm."""
    conf = (REPO / "deploy" / "swarm" / "nginx.conf").read_text()
    assert conf.count("http://$api:8000;") == 2 and conf.count("grpc://$api:8081;") == 1
    upstreams = "\n".join(
        f"    upstream {name} {{\n        server 127.0.0.1:{dead_port} max_fails=0;\n"
        f"        server 127.0.0.1:{port} max_fails=0;\n    }}"
        for name, dead_port, port in (
            ("replicas", dead.port, live.port),
            ("replicas_grpc", free_port(), live.grpc_port),
        )
    )
    conf = conf.replace("http://$api:8000;", "http://replicas;").replace(
        "grpc://$api:8081;", "grpc://replicas_grpc;"
    )
    conf = conf.replace("    server {\n", f"{upstreams}\n\n    server {{\n", 1)
    return _written_on_loopback(conf, listen, grpc_listen, tmp_path)


def test_the_swarm_balancer_retries_inference_on_another_replica_but_never_an_admin_call(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A replica that takes a REST request and dies: a prediction goes to the other replica and
    is answered; a model repository call (it changes the replica that runs it) is not sent
    twice: the client gets the failure, as many times as the dead replica got one. A gRPC call
    whose replica does not take the connection goes to the other one, prediction or not."""
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    triton: Any = require_module("tritonclient.grpc")  # its generated stubs
    live = start_server(NNSERVE_ADMIN_KEYS=ADMIN_KEY)
    dead = Unanswering()
    listen, grpc_listen = free_port(), free_port()
    conf = swarm_conf(tmp_path, dead, live, listen, grpc_listen)
    nginx_log = tmp_path / "nginx.log"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with nginx_log.open("wb") as log:
        balancer = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_listen}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=10) as http:
            wait_until_ready(http, balancer, nginx_log)
            stub = triton.service_pb2_grpc.GRPCInferenceServiceStub(channel)
            outcomes: dict[str, list[object]] = {}
            received: dict[str, int] = {}
            calls: dict[str, Callable[[], object]] = {
                "REST prediction": lambda: http.post("/predict/wine", json=WINE_PARTY).status_code,
                "REST repository index": lambda: http.post("/v2/repository/index", headers=admin).status_code,
                "gRPC inference": lambda: _grpc_code(
                    lambda: stub.ModelInfer(_wine_request(triton), timeout=10)
                ),
                "gRPC repository index": lambda: _grpc_code(
                    lambda: stub.RepositoryIndex(
                        triton.service_pb2.RepositoryIndexRequest(),
                        metadata=[("authorization", f"Bearer {ADMIN_KEY}")],
                    )
                ),
            }
            for kind, call in calls.items():
                before = dead.received
                outcomes[kind] = [call() for _ in range(ADMIN_CALLS)]
                received[kind] = dead.received - before
    finally:
        channel.close()
        balancer.terminate()
        balancer.wait(10)
        dead.close()
    summary = (
        f"outcomes {outcomes}, requests the dead replica got {received}\nnginx log:\n{nginx_log.read_text()}"
    )
    assert received["REST prediction"] > 0 and set(outcomes["REST prediction"]) == {200}, summary
    index = outcomes["REST repository index"]
    assert received["REST repository index"] > 0, summary
    assert index.count(502) == received["REST repository index"] == len(index) - index.count(200), summary
    assert set(outcomes["gRPC inference"]) == set(outcomes["gRPC repository index"]) == {"OK"}, summary


def _wine_request(triton: Any) -> Any:
    request = triton.service_pb2.ModelInferRequest(model_name="wine")
    request.inputs.add(name="guests", datatype="FP32", shape=[1, 10])
    request.raw_input_contents.append(np.array([[0, 1, 1, 0, 0, 0, 0, 0, 0, 0]], "<f4").tobytes())
    return request


def _grpc_code(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        failed: Any = error  # a grpc.Call as well
        return str(failed.code().name)
    return "OK"

"""An operator runs nnserve on a swarm of three Docker engines with `deploy/swarm.sh up --nodes 3`:
this machine's engine as the manager and two more, in containers, as workers, with a registry
that every node pulls the image from by digest. The three replicas run one a node and nginx on
the manager balances REST requests and gRPC calls (each call) over all three. Under continuous
load from 8 clients through nginx, draining a worker for maintenance and SIGKILLing another
node's container (a node lost) lose no request while requests go on being answered, and Swarm
puts the replicas back on the nodes left; `down` removes the nodes, the registry and the swarm.
The figures (time to `up`, requests answered and lost during each action, time to reschedule)
are printed with the test results.

The tests run in file order on one swarm, which the module fixture brings up; it removes the
nodes, the registry, the swarm (if there was none before), the images and the build cache it
made, even when a test fails. The engine and base images come as tests/support/docker.py says."""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from support.docker import WINE_BOTTLES, WINE_PARTY, Docker, engine, prune_build_cache, report, send_load
from support.server import free_port
from support.tools import require_module

# The first test's time includes `up`: the nodes' images (if deploy/local-images.sh has not made
# them yet), the build, the push and the pulls.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

NAME = f"nnserve-nodes-{secrets.token_hex(4)}"
NODES = 3
WORKERS = [f"nnserve-node-{number}" for number in range(1, NODES)]
CLIENTS = 8
# What deploy/swarm.sh labels the objects `up --nodes` makes with.
NODES_LABEL = "nnserve.swarm-nodes"
GRPC_CALLS = 60


@dataclass
class Cluster:
    docker: Docker
    env: dict[str, str]  # the SWARM_* variables deploy/swarm.sh reads
    state_before: str
    manager: str = ""  # this engine's node name
    registry: str = ""  # the registry's address, as the image's name starts
    up_seconds: float = 0.0
    up_output: str = ""
    reschedule_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['SWARM_PORT']}"

    @property
    def api(self) -> str:
        return f"{NAME}_api"

    def script(self, *args: str, check: bool = True) -> str:
        return self.docker.swarm_script(*args, env=self.env, check=check).stderr

    def placement(self) -> Counter[str]:
        """Running replicas a node: those Swarm wants running and reports running (healthy)."""
        lines = self.docker(
            "service",
            "ps",
            self.api,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        ).splitlines()
        return Counter(line.split()[0] for line in lines if line.split()[1:2] == ["Running"])

    def wait_for_placement(self, nodes: set[str], timeout: float = 180) -> float:
        """Seconds until NODES replicas run, on `nodes` and on each of them."""
        started = time.monotonic()
        while True:
            placed = self.placement()
            if sum(placed.values()) == NODES and set(placed) == nodes:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                tasks = self.docker("service", "ps", "--no-trunc", self.api)
                pytest.fail(f"not {NODES} replicas on {sorted(nodes)} within {timeout} s: {placed}\n{tasks}")
            time.sleep(0.5)

    def served_by_node(self, request_id_prefix: str) -> Counter[str]:
        """Requests with that id prefix each node's replicas answered, from the access logs
        `docker service logs` gathers from every node (a line: "task@node | {json}")."""
        served: Counter[str] = Counter()
        for line in self.docker("service", "logs", "--no-trunc", self.api, timeout=120).splitlines():
            task, _, entry = line.partition("| ")
            try:
                record = json.loads(entry)
            except json.JSONDecodeError:
                continue
            request_id = str(record.get("request_id", "")) if isinstance(record, dict) else ""
            if request_id.startswith(request_id_prefix):
                served[task.rsplit("@", 1)[-1].strip()] += 1
        return served

    def images_on(self, node: str) -> set[str]:
        """The images a worker's engine holds, as repository@digest."""
        return set(
            self.docker(
                "exec", node, "docker", "image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}"
            ).split()
        )


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def cluster(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`up --nodes 3`, which makes the nodes and the registry, builds the image and deploys it."""
    folder = tmp_path_factory.mktemp("nodes")
    env = {
        "SWARM_STACK": NAME,
        "SWARM_IMAGE": NAME,
        "SWARM_PORT": str(free_port()),
        "SWARM_GRPC_PORT": str(free_port()),
        "SWARM_STATE_DIR": str(folder / "state"),
        "SWARM_TIMEOUT": "300",
    }
    since = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    running = Cluster(docker, env, docker.swarm_state())
    try:
        started = time.monotonic()
        running.up_output = docker.swarm_script("up", "--nodes", str(NODES), "1", env=env).stdout
        running.up_seconds = time.monotonic() - started
        running.manager = docker("info", "--format", "{{.Name}}").strip()
        yield running
    finally:
        _remove(running, docker, since)


def _remove(running: Cluster, docker: Docker, since: datetime) -> None:
    """`down`, then whatever it left: nodes, registry, network, swarm, images, build cache."""
    running.script("down", check=False)
    leftovers = docker("ps", "--all", "--quiet", "--filter", f"label={NODES_LABEL}={NAME}").split()
    if leftovers:
        docker("rm", "--force", "--volumes", *leftovers, check=False)
    if docker.swarm_state() == "active":
        docker("stack", "rm", NAME, check=False)
        if running.state_before != "active":
            docker("swarm", "leave", "--force", check=False)
    docker("network", "rm", "nnserve-nodes", check=False)
    # The image by the module's name, and by the registry's (the host's address) before it.
    for reference in (f"{NAME}:*", f"*/{NAME}:*"):
        for image in docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={reference}"
        ).split():
            docker("image", "rm", image, check=False)
    prune_build_cache(docker, since)


def test_up_runs_one_replica_a_node_pulled_from_the_registry_by_digest(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    report(
        capsys,
        f"swarm up --nodes {NODES}: {NODES} replicas healthy on {NODES} nodes behind nginx "
        f"{cluster.up_seconds:.1f} s after `up` (nodes, registry, build, push, pulls)",
    )
    assert cluster.up_output.strip().splitlines()[-1] == f"http://localhost:{cluster.env['SWARM_PORT']}"
    nodes = cluster.docker(
        "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"
    ).splitlines()
    assert sorted(line.strip() for line in nodes) == sorted(
        [f"{cluster.manager} Ready Leader", *(f"{worker} Ready" for worker in WORKERS)]
    )
    assert cluster.placement() == Counter({cluster.manager: 1, **{worker: 1 for worker in WORKERS}})
    spec_image = cluster.docker(
        "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", cluster.api
    ).strip()
    repository, _, digest = spec_image.partition("@")
    cluster.registry = repository.split("/", 1)[0]
    assert digest.startswith("sha256:") and repository == f"{cluster.registry}/{NAME}:1", spec_image
    for worker in WORKERS:
        assert f"{cluster.registry}/{NAME}@{digest}" in cluster.images_on(worker), (
            f"{worker} pulled the digest"
        )
    with httpx.Client(base_url=cluster.url, timeout=10) as http:
        for number in range(60):
            response = http.post(
                "/predict/wine", json=WINE_PARTY, headers={"X-Request-ID": f"spread-{number}"}
            )
            assert response.status_code == 200 and abs(response.json()["bottles"] - WINE_BOTTLES) < 0.2
    served = cluster.served_by_node("spread-")
    assert set(served) == {cluster.manager, *WORKERS}, f"REST requests by node: {served}"


def test_grpc_is_published_and_balanced_per_call_over_the_nodes(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """One client, one HTTP/2 connection to nginx: each call may go to another replica."""
    grpcclient: Any = require_module("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{cluster.env['SWARM_GRPC_PORT']}")
    guests = grpcclient.InferInput("guests", [1, 10], "FP32")
    guests.set_data_from_numpy(np.array([[0, 1, 1, 0, 0, 0, 0, 0, 0, 0]], np.float32))
    try:
        for number in range(GRPC_CALLS):
            answer = client.infer("wine", [guests], headers={"x-request-id": f"grpc-{number}"})
            assert abs(float(answer.as_numpy("bottles")[0][0]) - WINE_BOTTLES) < 0.2
    finally:
        client.close()
    # `docker service logs` fetches the workers' lines through the manager: they may come late.
    deadline = time.monotonic() + 15
    while (
        sum((served := cluster.served_by_node("grpc-")).values()) < GRPC_CALLS and time.monotonic() < deadline
    ):
        time.sleep(1)
    report(capsys, f"swarm nodes: {GRPC_CALLS} gRPC calls on one connection, served by node {dict(served)}")
    assert set(served) == {cluster.manager, *WORKERS}, f"gRPC calls by node: {served}"


def test_draining_a_worker_under_load_loses_no_request_and_its_replica_moves(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """`docker node update --availability drain`: Swarm stops the worker's replica (it drains
    what it holds) and starts one on another node; nginx retries what the draining replica
    refuses. The node is made active again afterwards: Swarm does not move replicas back."""
    drained = WORKERS[0]
    left = {cluster.manager, *WORKERS} - {drained}

    def drain() -> None:
        cluster.docker("node", "update", "--availability", "drain", drained)
        cluster.reschedule_seconds["drain"] = cluster.wait_for_placement(left)

    load = send_load(cluster.url, CLIENTS, prefix="drain", before=3, action=drain, after=3)
    cluster.docker("node", "update", "--availability", "active", drained)
    report(
        capsys,
        f"swarm nodes: {drained} drained under {CLIENTS} clients: its replica running healthy on "
        f"another node {cluster.reschedule_seconds['drain']:.1f} s after the drain; during it "
        f"{load.answered_during_action} answered, {load.failed_during_action} failed; in all "
        f"{load.answered} answered, {len(load.failures)} failed; replicas by node "
        f"{dict(cluster.placement())}",
    )
    assert not load.failures, load.failures[:5]
    assert load.answered_during_action > 0, "no request was answered while the node drained"


def test_a_node_killed_under_load_loses_no_request_and_its_replica_comes_back(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL to a worker's container: its engine and replica vanish without a word. nginx
    retries what was in flight there (after its read timeout: the connection never closes) and
    what it sends to the lost address until DNS forgets it; Swarm notices the node is down and
    starts the replica on a node left."""
    placed = cluster.placement()
    victim = next(worker for worker in WORKERS if placed[worker] > 0)
    left = {cluster.manager, *WORKERS} - {victim}

    def kill() -> None:
        cluster.docker("kill", "--signal", "KILL", victim)
        cluster.reschedule_seconds["kill"] = cluster.wait_for_placement(left)

    load = send_load(cluster.url, CLIENTS, prefix="kill", before=3, action=kill, after=3)
    down = cluster.docker("node", "inspect", "--format", "{{.Status.State}}", victim).strip()
    report(
        capsys,
        f"swarm nodes: {victim}'s container SIGKILLed under {CLIENTS} clients: its replica running "
        f"healthy on another node {cluster.reschedule_seconds['kill']:.1f} s after the kill; "
        f"during it {load.answered_during_action} answered, {load.failed_during_action} failed; "
        f"in all {load.answered} answered, {len(load.failures)} lost; replicas by node "
        f"{dict(cluster.placement())}",
    )
    assert not load.failures, load.failures[:5]
    assert load.answered_during_action > 0, "no request was answered while the node was lost"
    assert down == "down"


def test_down_removes_the_nodes_the_registry_and_the_swarm(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    cluster.script("down")
    report(
        capsys, f"swarm nodes down: nodes, registry and stack removed in {time.monotonic() - started:.1f} s"
    )
    label = f"label={NODES_LABEL}={NAME}"
    assert cluster.docker("ps", "--all", "--quiet", "--filter", label).split() == []
    assert cluster.docker("network", "ls", "--quiet", "--filter", label).split() == []
    assert cluster.docker.swarm_state() == cluster.state_before
    assert cluster.registry and not Path(f"/etc/docker/certs.d/{cluster.registry}").exists(), (
        "the registry's certificate is still trusted"
    )
    pushed = cluster.docker("image", "ls", "--quiet", "--filter", f"reference={cluster.registry}/*:*")
    assert pushed.split() == [], "the image keeps the registry's name"

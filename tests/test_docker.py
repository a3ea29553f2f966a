"""The real thing: the project's Dockerfile built by a Docker engine, the image run locked down,
and docker-compose.yml's stack (replicas behind nginx) driven through its published port: the
README's curl lines, a replica killed under load, the replicas stopped with requests in flight,
and a third replica added as the README says.

The engine and the base images come as tests/support/docker.py says. The module removes
everything it creates (image, build cache, containers, network) even when a test fails, and
stops the engine if it had to start it. The figures (image size, build time, time to healthy,
requests answered and failed) are printed with the test results."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from readme_examples import README, examples, matches

from support.docker import (
    WINE_BOTTLES,
    WINE_PARTY,
    Docker,
    engine,
    prune_build_cache,
    report,
    run,
    send_load,
    wait_until,
)
from support.server import REPO, free_port
from support.slow_model import SlowModels

pytestmark = pytest.mark.docker

# Everything the module creates is named after it, so a leftover is easy to tell from the rest.
NAME = f"nnserve-test-{secrets.token_hex(4)}"
SERVICE_USER = 10001
COMPOSE_FILE = REPO / "docker-compose.yml"
# What the README tells users to run after scaling a running stack.
README_SCALING_STEP = "docker compose restart nginx"


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with engine() as running:
        yield running


@dataclass(frozen=True)
class Image:
    tag: str
    build_seconds: float
    megabytes: float


@pytest.fixture(scope="module")
def image(docker: Docker) -> Iterator[Image]:
    """The project's Dockerfile built once for the module (vfs copies every layer: builds are slow)."""
    tag = f"{NAME}:latest"
    since = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    started = time.monotonic()
    try:
        docker.build_project(tag)
        seconds = time.monotonic() - started
        size = int(docker("image", "inspect", "--format", "{{.Size}}", tag))
        yield Image(tag, seconds, size / 1e6)
    finally:
        docker("image", "rm", "--force", tag, check=False)
        prune_build_cache(docker, since)


PROBE = """
import importlib.util, json, os
print(json.dumps({
    "uid": os.getuid(),
    "torch": importlib.util.find_spec("torch") is not None,
    "read_only_root": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
}))
"""


def test_the_image_runs_locked_down_and_its_healthcheck_turns_healthy(
    docker: Docker, image: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    container = f"{NAME}-single"
    try:
        created = time.monotonic()
        docker(
            "create",
            "--name",
            container,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--publish",
            "127.0.0.1::8000",
            image.tag,
            timeout=300,
        )
        started = time.monotonic()
        docker("start", container)
        healthy_after = docker.wait_healthy([container]) - started
        report(
            capsys,
            f"docker image {image.tag}: {image.megabytes:.0f} MB, built in {image.build_seconds:.0f} s; "
            f"container created in {started - created:.1f} s, healthy {healthy_after:.1f} s after start",
        )

        assert json.loads(docker("exec", container, "python", "-c", PROBE)) == {
            "uid": SERVICE_USER,
            "torch": False,
            "read_only_root": True,
        }
        address = docker("port", container, "8000").split()[0]
        answer = httpx.post(f"http://{address}/predict/wine", json=WINE_PARTY, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["bottles"] == pytest.approx(WINE_BOTTLES, abs=0.2)

        check = docker.inspect(container)["Config"]["Healthcheck"]["Test"]
        assert check[0] == "CMD"
        assert docker.succeeds("exec", container, *check[1:])
        assert not docker.succeeds("exec", "--env", "NNSERVE_PORT=1", container, *check[1:]), (
            "the HEALTHCHECK passes where nothing listens"
        )
        docker.assert_log_is_json(container)
    finally:
        docker("rm", "--force", container, check=False)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class Stack:
    """docker-compose.yml run as a project of its own, with the module's image."""

    docker: Docker
    project: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, files: tuple[Path, ...] = (), timeout: float = 300) -> str:
        extra = [word for path in files for word in ("--file", str(path))]
        command = [
            self.docker.compose_cli,
            "--project-name",
            self.project,
            "--file",
            str(COMPOSE_FILE),
            *extra,
        ]
        return run([*command, *args], self.docker.env, timeout, check=True)

    def containers(self, service: str) -> list[str]:
        return sorted(self.compose("ps", "--quiet", service).split())

    def up(self, *args: str, files: tuple[Path, ...] = ()) -> list[str]:
        """`docker-compose up -d` and wait until every replica is healthy and nginx answers;
        returns the replicas."""
        self.compose("up", "--detach", "--no-build", *args, files=files, timeout=600)
        replicas = self.containers("api")
        self.docker.wait_healthy(replicas)
        self.wait_ready()
        return replicas

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"nginx on :{self.port} did not answer /ready:\n{self.compose('logs', '--tail=30')}"
                )
            time.sleep(0.5)

    def remove(self) -> None:
        """Down, then anything of the project that down missed."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
        label = f"label=com.docker.compose.project={self.project}"
        if containers := self.docker("ps", "--all", "--quiet", "--filter", label).split():
            self.docker("rm", "--force", *containers, check=False)
        if networks := self.docker("network", "ls", "--quiet", "--filter", label).split():
            self.docker("network", "rm", *networks, check=False)


@pytest.fixture(scope="module")
def stack(docker: Docker, image: Image) -> Iterator[Stack]:
    """The compose project on :8000 as the README says, or on a free port if 8000 is taken (and
    gRPC on :8081, or a free port)."""
    port = 8000 if _port_is_free(8000) else free_port()
    grpc_port = 8081 if _port_is_free(8081) else free_port()
    env = {
        **docker.env,
        "NNSERVE_IMAGE": image.tag,
        "NNSERVE_HOST_PORT": str(port),
        "NNSERVE_GRPC_HOST_PORT": str(grpc_port),
    }
    running = Stack(Docker(docker.cli, docker.compose_cli, env), NAME, port)
    try:
        yield running
    finally:
        running.remove()


def test_compose_serves_the_readme_curl_lines_through_nginx(stack: Stack) -> None:
    replicas = stack.up()
    services = yaml.safe_load(stack.compose("config"))["services"]
    assert len(replicas) == services["api"]["deploy"]["replicas"] == 2
    assert len(stack.containers("nginx")) == 1
    curl_lines = [e for e in examples(README.read_text()) if e.kind == "sh" and not e.needs_key]
    for path in ("/predict/wine", "/predict/spam", "/predict/digit"):
        assert any(path in example.code for example in curl_lines), f"no README curl line for {path}"
    answers = {example: example.run(f"localhost:{stack.port}", key="") for example in curl_lines}
    wrong = [
        f"README.md:{example.answer_line} prints\n  {example.answer}\nbut the stack answers\n  {actual}"
        for example, actual in answers.items()
        if not matches(example.answer, actual)
    ]
    assert not wrong, "\n".join(wrong)
    for replica in replicas:
        stack.docker.assert_log_is_json(replica)


def test_a_replica_killed_under_load_costs_no_request_and_comes_back(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL to a replica's process from outside, as the kernel's OOM killer would send it:
    nginx retries what was in flight on the other replica, and the restart policy brings the
    killed one back."""
    replicas = stack.up()
    victim = replicas[0]
    before = stack.docker.inspect(victim)
    load = send_load(
        stack.url,
        clients=8,
        prefix="kill",
        before=4,
        action=lambda: os.kill(before["State"]["Pid"], signal.SIGKILL),
        after=8,
    )
    served = [stack.docker.served(replica, "kill-") for replica in replicas]
    report(
        capsys,
        f"docker kill: 8 clients for 12 s through nginx, one of 2 replicas SIGKILLed at 4 s: "
        f"{load.answered} answered, {len(load.failures)} failed; served per replica {served}",
    )
    assert not load.failures, load.failures[:5]
    assert load.answered_after_action > 0, "no request was answered after the kill"
    assert all(count > 0 for count in served), f"requests were not spread: {served}"
    wait_until(
        lambda: stack.docker.inspect(victim)["RestartCount"] > before["RestartCount"],
        timeout=30,
        what="the killed replica restarted",
    )
    stack.docker.wait_healthy([victim])
    for replica in replicas:
        stack.docker.assert_log_is_json(replica)


def test_scaling_to_three_replicas_and_restarting_nginx_spreads_requests_over_all(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert README_SCALING_STEP in README.read_text()
    replicas = stack.up("--scale", "api=3")
    assert len(replicas) == 3
    stack.compose(*README_SCALING_STEP.split()[2:])
    stack.wait_ready()
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        statuses = Counter(
            http.post("/predict/wine", json=WINE_PARTY, headers={"X-Request-ID": f"scale-{n}"}).status_code
            for n in range(300)
        )
    served = [stack.docker.served(replica, "scale-") for replica in replicas]
    report(
        capsys,
        f"docker scale: 300 requests over 3 replicas: statuses {dict(statuses)}, served per replica {served}",
    )
    assert statuses == {200: 300}
    assert all(count > 0 for count in served), f"a replica served nothing: {served}"


def test_stopping_the_replicas_answers_every_request_they_accepted(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str], slow_models: SlowModels
) -> None:
    """`docker-compose stop api` sends SIGTERM while every replica has slow requests in flight."""
    slow_ms, in_flight = 1500, 8
    slow = tmp_path / "slow.yml"
    slow.write_text(
        yaml.safe_dump({"services": {"api": {"volumes": [f"{slow_models(slow_ms)}:/app/models:ro"]}}})
    )
    replicas = stack.up(files=(slow,))
    grace = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["api"]["stop_grace_period"]
    grace_seconds = float(grace.removesuffix("s"))

    def predict(number: int) -> httpx.Response:
        return httpx.post(
            f"{stack.url}/predict/wine",
            json=WINE_PARTY,
            timeout=60,
            headers={"X-Request-ID": f"stop-{number}"},
        )

    with ThreadPoolExecutor(in_flight) as pool:
        futures = [pool.submit(predict, number) for number in range(in_flight)]
        time.sleep(slow_ms / 1000 / 2)  # every request is inside a replica, the first ones in onnxruntime
        signalled = time.monotonic()
        stack.compose("stop", "api", files=(slow,))
        stopped_after = time.monotonic() - signalled
        answers = [future.result(timeout=60) for future in futures]

    exits = [stack.docker.inspect(replica)["State"]["ExitCode"] for replica in replicas]
    served = [stack.docker.served(replica, "stop-") for replica in replicas]
    statuses = [answer.status_code for answer in answers]
    report(
        capsys,
        f"docker-compose stop api with {in_flight} requests of {slow_ms} ms in flight: statuses {statuses}, "
        f"served per replica {served}, exit codes {exits}, stopped in {stopped_after:.1f} s (grace {grace})",
    )
    assert statuses == [200] * in_flight, [answer.text for answer in answers]
    assert all(abs(answer.json()["bottles"] - WINE_BOTTLES) <= 0.2 for answer in answers)
    assert all(count > 0 for count in served), f"not every replica had requests in flight: {served}"
    assert exits == [0] * len(replicas), "a replica did not exit cleanly (137: killed after the grace period)"
    assert stopped_after < grace_seconds
    for replica in replicas:
        stack.docker.assert_log_is_json(replica)

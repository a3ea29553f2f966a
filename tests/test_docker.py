"""The real thing: the project's Dockerfile built by a Docker engine, the image run locked down,
and docker-compose.yml's stack (replicas behind nginx) driven through its published port: the
README's curl lines, a replica killed under load, the replicas stopped with requests in flight,
and a third replica added as the README says.

The tests run as root. Without access to a registry, the base images are the stand-ins
deploy/local-images.sh makes from Debian packages (it starts the engine too); PYTHON_IMAGE and
NGINX_IMAGE name others. The module removes everything it creates (image, build cache,
containers, network) even when a test fails, and stops the engine if it had to start it. The
figures (image size, build time, time to healthy, requests answered and failed) are printed with
the test results."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import yaml
from readme_examples import README, examples, matches

from support.server import REPO, free_port, is_json_object
from support.tools import require_tool

pytestmark = pytest.mark.docker

# Everything the module creates is named after it, so a leftover is easy to tell from the rest.
NAME = f"nnserve-test-{secrets.token_hex(4)}"
WINE_PARTY = {"guests": ["Dahlia", "Stiffy"]}
WINE_BOTTLES = 4.3
SERVICE_USER = 10001
COMPOSE_FILE = REPO / "docker-compose.yml"
# What the README tells users to run after scaling a running stack.
README_SCALING_STEP = "docker compose restart nginx"
ENGINE_PID_FILE = Path("/var/run/docker.pid")
# Debian's CLI builds with BuildKit without the buildx plugin a newer CLI on the PATH may lack.
DEBIAN_DOCKER = "/usr/bin/docker"


def unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, where .ci/run prepares the engine."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def _run(command: list[str], env: dict[str, str], timeout: float, check: bool) -> str:
    """The command's output (stdout and stderr together); a failure shows both."""
    try:
        done = subprocess.run(
            command,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{shlex.join(command)} took more than {timeout} s:\n{expired.output}")
    if check and done.returncode != 0:
        pytest.fail(f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout[-4000:]}")
    return done.stdout


@dataclass(frozen=True)
class Docker:
    cli: str
    compose_cli: str
    env: dict[str, str]  # with DOCKER_BUILDKIT, PYTHON_IMAGE and NGINX_IMAGE

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return _run([self.cli, *args], self.env, timeout, check)

    def succeeds(self, *args: str) -> bool:
        return (
            subprocess.run(
                [self.cli, *args], env=self.env, capture_output=True, timeout=60, check=False
            ).returncode
            == 0
        )

    def inspect(self, container: str) -> dict[str, Any]:
        [details] = json.loads(self("inspect", container))
        return dict(details)

    def log_lines(self, container: str) -> list[str]:
        return [line for line in self("logs", container, timeout=60).splitlines() if line.strip()]

    def served(self, container: str, request_id_prefix: str) -> int:
        """Requests with that id prefix the container answered with 200, from its access log."""
        entries = (json.loads(line) for line in self.log_lines(container) if is_json_object(line))
        return sum(
            1
            for entry in entries
            if entry.get("status") == 200 and str(entry.get("request_id", "")).startswith(request_id_prefix)
        )

    def assert_log_is_json(self, container: str) -> None:
        """The service's promise: one JSON object per line, whatever a library writes."""
        lines = self.log_lines(container)
        not_json = [line for line in lines if not is_json_object(line)]
        assert lines and not not_json, f"{container} logged lines that are not JSON:\n" + "\n".join(not_json)

    def wait_healthy(self, containers: list[str], timeout: float = 120) -> float:
        """The time when every container's HEALTHCHECK passes; fails if one exits first."""
        deadline = time.monotonic() + timeout
        while True:
            states = [self.inspect(container)["State"] for container in containers]
            if all(state.get("Health", {}).get("Status") == "healthy" for state in states):
                return time.monotonic()
            for container, state in zip(containers, states, strict=True):
                if state["Status"] == "exited":
                    pytest.fail(f"{container} exited {state['ExitCode']}:\n{self('logs', container)}")
            if time.monotonic() > deadline:
                pytest.fail(f"not healthy within {timeout} s: {[s.get('Health') for s in states]}")
            time.sleep(0.5)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.5)


def _engine_answers(cli: str) -> bool:
    return subprocess.run([cli, "info"], capture_output=True, timeout=30, check=False).returncode == 0


def _local_images(env: dict[str, str]) -> dict[str, str]:
    """Runs deploy/local-images.sh (it starts the engine if needed and makes the stand-in base
    images once) and returns the variables it prints."""
    done = subprocess.run(
        [str(REPO / "deploy" / "local-images.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        unavailable(f"deploy/local-images.sh exited {done.returncode}: {last[0]}\n{done.stderr[-2000:]}")
    words = shlex.split(done.stdout.strip().splitlines()[-1])
    assert words[0] == "export", done.stdout
    return dict(word.split("=", 1) for word in words[1:])


def _stop_engine() -> None:
    pid = int(ENGINE_PID_FILE.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """The engine, with the base images to build from. One this module started is stopped after."""
    cli = DEBIAN_DOCKER if Path(DEBIAN_DOCKER).is_file() else require_tool("docker")
    compose_cli = require_tool("docker-compose")
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if os.geteuid() != 0:
        unavailable(
            "the Docker tests run as root: they start the engine if it is not running, make base images "
            "with debootstrap (deploy/local-images.sh) and kill a replica's process"
        )
    was_running = _engine_answers(cli)
    try:
        if not (was_running and env.get("PYTHON_IMAGE") and env.get("NGINX_IMAGE")):
            env = {**_local_images(env), **env}
        yield Docker(cli, compose_cli, env)
    finally:
        if not was_running and ENGINE_PID_FILE.exists():
            _stop_engine()


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
        docker(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"PYTHON_IMAGE={docker.env['PYTHON_IMAGE']}",
            "--tag",
            tag,
            ".",
            timeout=900,
        )
        seconds = time.monotonic() - started
        size = int(docker("image", "inspect", "--format", "{{.Size}}", tag))
        yield Image(tag, seconds, size / 1e6)
    finally:
        docker("image", "rm", "--force", tag, check=False)
        _prune_build_cache(docker, since)


def _prune_build_cache(docker: Docker, since: datetime) -> None:
    """BuildKit keeps every layer it builds as cache, and vfs stores each as a full copy of the
    filesystem: remove the records this build added, children before parents (a record is only
    removable once nothing refers to it). pip's download cache (a cache mount) stays."""
    tried: set[str] = set()
    while True:
        records = json.loads(docker("system", "df", "--verbose", "--format", "{{json .BuildCache}}"))
        parents = {record["Parent"] for record in records}
        leaves = [
            record["ID"]
            for record in records
            if record["CacheType"] != "exec.cachemount"
            and record["InUse"] == "false"
            and datetime.fromisoformat(record["CreatedAt"][:19]) >= since
            and record["ID"] not in parents | tried
        ]
        if not leaves:
            return
        for record in leaves:
            docker("builder", "prune", "--force", "--filter", f"id={record}", check=False)
        tried.update(leaves)


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
        return _run([*command, *args], self.docker.env, timeout, check=True)

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


@dataclass(frozen=True)
class LoadResult:
    answered: int
    failures: list[str]


def send_load(
    url: str, clients: int, prefix: str, seconds: float, at: float, action: Callable[[], object]
) -> LoadResult:
    """`clients` threads post the wine party through nginx as fast as they can for `seconds`, and
    `action` runs `at` seconds in. Each request's X-Request-ID starts with `prefix`, so the
    replicas' access logs can count it."""
    stop = threading.Event()
    failures: list[str | None] = []  # None for a correct answer

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for sent in itertools.count(1):
                if stop.is_set():
                    return
                request_id = f"{prefix}-{number}-{sent}"
                try:
                    response = http.post(
                        "/predict/wine", json=WINE_PARTY, headers={"X-Request-ID": request_id}
                    )
                    wrong = (
                        response.status_code != 200 or abs(response.json()["bottles"] - WINE_BOTTLES) > 0.2
                    )
                    failures.append(
                        f"{request_id}: {response.status_code} {response.text[:200]}" if wrong else None
                    )
                except httpx.HTTPError as error:
                    failures.append(f"{request_id}: {error!r}")

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, number) for number in range(clients)]
        try:
            time.sleep(at)
            action()
            time.sleep(seconds - at)
        finally:
            stop.set()
        for future in futures:
            future.result(timeout=60)
    return LoadResult(failures.count(None), [failure for failure in failures if failure])


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
        seconds=12,
        at=4,
        action=lambda: os.kill(before["State"]["Pid"], signal.SIGKILL),
    )
    served = [stack.docker.served(replica, "kill-") for replica in replicas]
    report(
        capsys,
        f"docker kill: 8 clients for 12 s through nginx, one of 2 replicas SIGKILLed at 4 s: "
        f"{load.answered} answered, {len(load.failures)} failed; served per replica {served}",
    )
    assert not load.failures, load.failures[:5]
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
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`docker-compose stop api` sends SIGTERM while every replica has slow requests in flight."""
    slow_ms, in_flight = 1500, 8
    slow = tmp_path / "slow.yml"
    slow.write_text(
        yaml.safe_dump(
            {"services": {"api": {"environment": {"NNSERVE_TEST_INFERENCE_DELAY_MS": str(slow_ms)}}}}
        )
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

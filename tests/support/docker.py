"""The Docker engine as the Docker tests drive it (tests/test_docker.py: the image and the compose
stack; tests/test_swarm.py and tests/test_swarm_nodes.py: the Swarm stack, on one engine and on
several): the engine started if needed with the base images deploy/local-images.sh makes, the
CLI, deploy/swarm.sh, cleanup of the build cache, and load sent through nginx while something
happens to the replicas.

The tests run as root. Without access to a registry, the base images are the stand-ins
deploy/local-images.sh makes from Debian packages (it starts the engine too); PYTHON_IMAGE and
NGINX_IMAGE name others."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from support.server import REPO, is_json_object
from support.tools import require_tool

ENGINE_PID_FILE = Path("/var/run/docker.pid")
# Debian's CLI builds with BuildKit without the buildx plugin a newer CLI on the PATH may lack.
DEBIAN_DOCKER = "/usr/bin/docker"
SWARM_SCRIPT = REPO / "deploy" / "swarm.sh"
WINE_PARTY = {"guests": ["Dahlia", "Stiffy"]}
WINE_BOTTLES = 4.3


def unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, where .ci/run prepares the engine."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def run(command: list[str], env: dict[str, str], timeout: float, check: bool) -> str:
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
        return run([self.cli, *args], self.env, timeout, check)

    def build_project(self, tag: str) -> None:
        """The project's Dockerfile, on the base image that deploy/local-images.sh made."""
        self(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"PYTHON_IMAGE={self.env['PYTHON_IMAGE']}",
            "--tag",
            tag,
            ".",
            timeout=900,
        )

    def swarm_state(self) -> str:
        return self("info", "--format", "{{.Swarm.LocalNodeState}}").strip()

    def swarm_script(
        self, *args: str, env: dict[str, str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """deploy/swarm.sh with `env` (its SWARM_* variables) over the engine's."""
        done = subprocess.run(
            [str(SWARM_SCRIPT), *args],
            env={**self.env, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"deploy/swarm.sh {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

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


@contextmanager
def engine() -> Iterator[Docker]:
    """The engine, with the base images to build from. One this started is stopped after."""
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


def prune_build_cache(docker: Docker, since: datetime) -> None:
    """BuildKit keeps every layer it builds as cache, and vfs stores each as a full copy of the
    filesystem: remove the records builds since `since` added, children before parents (a record
    is only removable once nothing refers to it). pip's download cache (a cache mount) stays."""
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


@dataclass(frozen=True)
class LoadResult:
    answered: int
    failures: list[str]
    answered_during_action: int
    failed_during_action: int
    action_seconds: float
    # Answered once the action returned: an instant action (a kill) has no "during" to count.
    answered_after_action: int = 0


def send_load(
    url: str,
    clients: int,
    prefix: str,
    before: float,
    action: Callable[[], object],
    after: float,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """`clients` threads post the wine party through nginx as fast as they can; `action` runs
    `before` seconds in, and the load goes on for `after` seconds once it has returned. Each
    request's X-Request-ID starts with `prefix`, so the replicas' access logs can count it."""
    stop = threading.Event()
    outcomes: list[tuple[float, str | None]] = []  # (when it finished, None for a correct answer)

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
            for sent in itertools.count(1):
                if stop.is_set():
                    return
                request_id = f"{prefix}-{number}-{sent}"
                failure = None
                try:
                    response = http.post(
                        "/predict/wine", json=WINE_PARTY, headers={"X-Request-ID": request_id}
                    )
                    wrong = (
                        response.status_code != 200 or abs(response.json()["bottles"] - WINE_BOTTLES) > 0.2
                    )
                    if wrong:
                        failure = f"{request_id}: {response.status_code} {response.text[:200]}"
                except httpx.HTTPError as error:
                    failure = f"{request_id}: {error!r}"
                outcomes.append((time.monotonic(), failure))

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, number) for number in range(clients)]
        try:
            time.sleep(before)
            started = time.monotonic()
            action()
            ended = time.monotonic()
            time.sleep(after)
        finally:
            stop.set()
        for future in futures:
            future.result(timeout=60)
    during = [failure for when, failure in outcomes if started <= when <= ended]
    return LoadResult(
        answered=sum(failure is None for _, failure in outcomes),
        failures=[failure for _, failure in outcomes if failure],
        answered_during_action=during.count(None),
        failed_during_action=len(during) - during.count(None),
        action_seconds=ended - started,
        answered_after_action=sum(failure is None for when, failure in outcomes if when > ended),
    )

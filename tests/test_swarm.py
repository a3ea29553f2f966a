"""An operator runs nnserve on Docker Swarm with deploy/swarm.sh and deploy/swarm/stack.yml, on a
real engine: `up` serves the README's curl lines through nginx; under continuous load from 8
clients, a rolling update to a new image tag, an update to an image that turns unhealthy (which
Swarm rolls back by itself), a SIGKILLed replica and scaling from 2 to 4 replicas lose no
request, and the new replicas get their share; `down` removes the stack and leaves a swarm that
`up` created. The figures (time to healthy, update and rollback durations with requests served
and failed, scale-up time, requests lost to the kill) are printed with the test results.

The tests run in file order on one stack, which the module fixture brings up. It removes the
stack, the images and the build cache it made, and leaves the swarm if there was none before,
even when a test fails. The engine and base images come as tests/support/docker.py says."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from readme_examples import README, examples, matches

from support.docker import Docker, engine, prune_build_cache, report, send_load, wait_until
from support.server import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The stack and the image repository are named after the module run, so a leftover is easy to
# tell from the rest.
NAME = f"nnserve-swarm-{secrets.token_hex(4)}"
CLIENTS = 8
API_KEY = f"swarm-predict-{secrets.token_hex(8)}"
ADMIN_KEY = f"swarm-admin-{secrets.token_hex(8)}"
# A new image whose wine model is not a model: the service starts, and /ready answers 503.
BROKEN_IMAGE = "FROM {base}\nCOPY model.onnx /app/models/wine/1/model.onnx\n"


@dataclass
class Swarm:
    docker: Docker
    env: dict[str, str]  # the SWARM_* variables deploy/swarm.sh reads
    port: int
    node_state_before: str
    keys: Path  # the prediction keys, a file
    up_seconds: float = 0.0
    up_output: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{NAME}_api"

    def script(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.docker.swarm_script(*args, env={**self.env, **(env or {})}, check=check)

    def with_keys(self) -> dict[str, str]:
        """The variables that turn the prediction keys on (tests after the first update keep them)."""
        return {"SWARM_API_KEYS_FILE": str(self.keys)}

    def node_state(self) -> str:
        return self.docker.swarm_state()

    def replicas(self, *, healthy: bool = False) -> list[str]:
        """The api containers running now (`healthy`: and whose HEALTHCHECK passes)."""
        label = f"label=com.docker.swarm.service.name={self.api}"
        state = ["--filter", "health=healthy"] if healthy else []
        return sorted(
            self.docker("ps", "--quiet", "--filter", label, "--filter", "status=running", *state).split()
        )

    def images(self) -> set[str]:
        return {self.docker.inspect(container)["Config"]["Image"] for container in self.replicas()}

    def service(self) -> dict[str, object]:
        [details] = json.loads(self.docker("service", "inspect", self.api))
        return dict(details)

    def spec_image(self) -> str:
        return str(
            self.docker(
                "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", self.api
            )
        ).strip()

    def stack_objects(self) -> dict[str, list[str]]:
        """What of the stack is left: containers, networks, services, secrets and configs."""
        label = f"label=com.docker.stack.namespace={NAME}"
        found = {
            "containers": self.docker("ps", "--all", "--quiet", "--filter", label).split(),
            "networks": self.docker("network", "ls", "--quiet", "--filter", label).split(),
        }
        if self.node_state() == "active":
            for kind in ("service", "secret", "config"):
                found[f"{kind}s"] = self.docker(kind, "ls", "--quiet", "--filter", label).split()
        return {kind: ids for kind, ids in found.items() if ids}


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    with engine() as running:
        yield running


@pytest.fixture(scope="module")
def swarm(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """The stack up with 2 replicas of the module's image (built here, so `up` measures the
    deploy alone), open predictions and the admin key as a secret."""
    folder = tmp_path_factory.mktemp("swarm")
    (folder / "api-keys").write_text(f"{API_KEY}\n")
    (folder / "admin-keys").write_text(f"{ADMIN_KEY}\n")
    env = {
        "SWARM_STACK": NAME,
        "SWARM_IMAGE": NAME,
        "SWARM_PORT": str(free_port()),
        "SWARM_GRPC_PORT": str(free_port()),
        "SWARM_ADMIN_KEYS_FILE": str(folder / "admin-keys"),
        "SWARM_STATE_DIR": str(folder / "state"),
        "SWARM_TIMEOUT": "240",
    }
    since = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    running = Swarm(docker, env, int(env["SWARM_PORT"]), "", folder / "api-keys")
    running.node_state_before = running.node_state()
    try:
        docker.build_project(f"{NAME}:1")
        started = time.monotonic()
        done = running.script("up", "1", env={"SWARM_BUILD": "0"})
        running.up_seconds = time.monotonic() - started
        running.up_output = done.stdout
        yield running
    finally:
        _remove(running, docker, since)


def _remove(running: Swarm, docker: Docker, since: datetime) -> None:
    """`down`, then whatever it left: the stack, the swarm if the module made it, the images."""
    if running.node_state() == "active":
        running.script("down", check=False)
    if running.node_state() == "active":
        docker("stack", "rm", NAME, check=False)
        if running.node_state_before != "active":
            docker("swarm", "leave", "--force", check=False)
    # By name: an image id would take other names of the same image with it.
    for image in docker(
        "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={NAME}:*"
    ).split():
        docker("image", "rm", image, check=False)
    prune_build_cache(docker, since)


def _authorized() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def test_up_serves_the_readme_curl_lines_through_nginx(
    swarm: Swarm, capsys: pytest.CaptureFixture[str]
) -> None:
    report(
        capsys, f"swarm up: 2 replicas of {NAME}:1 healthy behind nginx {swarm.up_seconds:.1f} s after `up`"
    )
    assert swarm.up_output.strip().splitlines()[-1] == f"http://localhost:{swarm.port}", "up prints the URL"
    assert swarm.node_state() == "active"
    assert len(swarm.replicas()) == 2 and swarm.images() == {f"{NAME}:1"}
    for replica in swarm.replicas():
        assert swarm.docker.inspect(replica)["State"]["Health"]["Status"] == "healthy"
    curl_lines = [e for e in examples(README.read_text()) if e.kind == "sh" and not e.needs_key]
    answers = {example: example.run(f"localhost:{swarm.port}", key="") for example in curl_lines}
    wrong = [
        f"README.md:{example.answer_line} prints\n  {example.answer}\nbut the swarm answers\n  {actual}"
        for example, actual in answers.items()
        if not matches(example.answer, actual)
    ]
    assert curl_lines and not wrong, "\n".join(wrong)
    # The admin key reached the replicas as a secret file (NNSERVE_ADMIN_KEYS_FILE).
    with httpx.Client(base_url=swarm.url, timeout=10) as http:
        assert (
            http.post("/v2/repository/index", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code
            == 200
        )
        assert http.post("/v2/repository/index").status_code == 401
    for replica in swarm.replicas():
        swarm.docker.assert_log_is_json(replica)


def test_a_rolling_update_to_a_new_image_tag_loses_no_request(
    swarm: Swarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """`update 2` builds the same source as a new tag (BuildKit's cache makes that quick) and
    turns the prediction keys on, which the clients send throughout: every replica is replaced,
    one at a time, each new one healthy before an old one stops."""
    before = swarm.replicas()
    load = send_load(
        swarm.url,
        CLIENTS,
        prefix="update",
        before=2,
        action=lambda: swarm.script("update", "2", env=swarm.with_keys()),
        after=2,
        headers=_authorized(),
    )
    status = swarm.service()["UpdateStatus"]
    assert isinstance(status, dict)
    rolled = datetime.fromisoformat(status["CompletedAt"][:26]) - datetime.fromisoformat(
        status["StartedAt"][:26]
    )
    report(
        capsys,
        f"swarm rolling update to {NAME}:2 under {CLIENTS} clients: `update` took "
        f"{load.action_seconds:.1f} s "
        f"(the roll itself {rolled.total_seconds():.1f} s, by Swarm's UpdateStatus); during it "
        f"{load.answered_during_action} answered, {load.failed_during_action} failed; "
        f"in all {load.answered} answered, {len(load.failures)} failed",
    )
    assert not load.failures, load.failures[:5]
    assert load.answered_during_action > 0, "no request was answered while the update ran"
    assert status["State"] == "completed"
    after = swarm.replicas()
    assert len(after) == 2 and not set(before) & set(after), "every replica was replaced"
    assert swarm.images() == {f"{NAME}:2"}
    with httpx.Client(base_url=swarm.url, timeout=10) as http:
        party = {"guests": ["Dahlia", "Stiffy"]}
        assert http.post("/predict/wine", json=party).status_code == 401, "the prediction keys are on"
        assert http.post("/predict/wine", json=party, headers=_authorized()).status_code == 200


def test_an_update_whose_image_turns_unhealthy_rolls_back_by_itself_and_loses_no_request(
    swarm: Swarm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serving = swarm.spec_image()
    broken = f"{NAME}:broken"
    (tmp_path / "model.onnx").write_text("not an ONNX model")
    (tmp_path / "Dockerfile").write_text(BROKEN_IMAGE.format(base=serving))
    swarm.docker("build", "--tag", broken, str(tmp_path))
    outcome: list[subprocess.CompletedProcess[str]] = []
    load = send_load(
        swarm.url,
        CLIENTS,
        prefix="rollback",
        before=2,
        action=lambda: outcome.append(
            swarm.script("update", "broken", check=False, env={"SWARM_BUILD": "0", **swarm.with_keys()})
        ),
        after=2,
        headers=_authorized(),
    )
    [done] = outcome
    report(
        capsys,
        f"swarm update to an image that turns unhealthy, under {CLIENTS} clients: back on {serving}, "
        f"every replica healthy, {load.action_seconds:.1f} s after `update`; during it "
        f"{load.answered_during_action} answered, {load.failed_during_action} failed",
    )
    assert done.returncode == 1 and f"rolled back to {serving}" in done.stderr, done.stderr
    assert not load.failures, load.failures[:5]
    assert load.answered_during_action > 0, "no request was answered while the update ran"
    status = swarm.service()["UpdateStatus"]
    assert isinstance(status, dict) and status["State"] == "rollback_completed", status
    assert swarm.spec_image() == serving and swarm.images() == {serving}
    tried = swarm.docker("ps", "--all", "--quiet", "--filter", f"ancestor={broken}").split()
    assert tried, "the broken image never ran"
    # A task Swarm created but stopped before it started (the rollback began) has no health yet.
    states = [swarm.docker.inspect(container)["State"] for container in tried]
    health = [state["Health"]["Status"] for state in states if "Health" in state]
    assert "unhealthy" in health and "healthy" not in health, states


def test_scaling_from_two_to_four_replicas_under_load_spreads_requests_over_all_four(
    swarm: Swarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's command; nginx finds the new replicas through Docker's DNS while it runs."""
    swarm.docker("service", "scale", f"{swarm.api}=2", timeout=300)
    load = send_load(
        swarm.url,
        CLIENTS,
        prefix="scale",
        before=2,
        action=lambda: swarm.docker("service", "scale", f"{swarm.api}=4", timeout=300),
        after=6,
        headers=_authorized(),
    )
    replicas = swarm.replicas(healthy=True)
    served = [swarm.docker.served(replica, "scale-") for replica in replicas]
    report(
        capsys,
        f"swarm scale 2 -> 4 under {CLIENTS} clients: converged (new replicas healthy) in "
        f"{load.action_seconds:.1f} s; {load.answered} answered, {len(load.failures)} failed; "
        f"served per replica {served}",
    )
    assert not load.failures, load.failures[:5]
    assert load.answered_during_action > 0, "no request was answered while the service scaled"
    assert len(replicas) == 4
    assert all(count > 0 for count in served), f"a replica served nothing: {served}"


def test_a_replica_killed_with_sigkill_under_load_loses_no_request_and_is_replaced(
    swarm: Swarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL to a replica's process from outside, as the kernel's OOM killer would send it:
    nginx retries what was in flight on another replica, and Swarm starts a new task."""
    replicas = swarm.replicas()
    victim = replicas[0]
    pid = swarm.docker.inspect(victim)["State"]["Pid"]
    killed_at: list[float] = []

    def kill() -> None:
        os.kill(pid, signal.SIGKILL)
        killed_at.append(time.monotonic())

    load = send_load(swarm.url, CLIENTS, prefix="kill", before=3, action=kill, after=8, headers=_authorized())
    wait_until(
        lambda: len(now := swarm.replicas(healthy=True)) == len(replicas) and victim not in now,
        timeout=90,
        what="Swarm replaced the killed replica with a healthy one",
    )
    replaced = time.monotonic() - killed_at[0]
    report(
        capsys,
        f"swarm kill: {CLIENTS} clients, one of {len(replicas)} replicas SIGKILLed: "
        f"{load.answered} answered, "
        f"{len(load.failures)} lost; a new replica healthy within {replaced:.1f} s",
    )
    assert not load.failures, load.failures[:5]
    assert load.answered_after_action > 0, "no request was answered after the kill"


def test_down_removes_the_stack_and_leaves_a_swarm_it_created(
    swarm: Swarm, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    swarm.script("down")
    report(capsys, f"swarm down: stack removed in {time.monotonic() - started:.1f} s")
    assert swarm.stack_objects() == {}
    assert swarm.node_state() == swarm.node_state_before
    networks = swarm.docker("network", "ls", "--format", "{{.Name}}").split()
    if swarm.node_state_before != "active":
        assert "docker_gwbridge" not in networks and "ingress" not in networks

"""Deployment artefacts, each checked by the real tool that can run here (there is no Docker
engine): hadolint, a Compose implementation, the Kubernetes schemas, and the container's own
install-and-start path in a fresh virtual environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import MODELS_DIR, REPO, free_port, require_tool

K8S_DIR = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"


def _venv_tool(name: str) -> str:
    return require_tool(name, str(Path(sys.executable).parent / name))


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run([_venv_tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    ignores = re.findall(r"hadolint ignore=.*", (REPO / "Dockerfile").read_text())
    assert not ignores, f"ignored rules need an inline reason: {ignores}"


def test_the_dockerfile_runs_the_service_as_the_tests_do() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2, "multi-stage"
    assert "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.M), "non-root, numeric user"
    assert "EXPOSE 8000" in dockerfile and "/ready" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert dockerfile.rstrip().endswith('CMD ["nnserve"]')
    assert "[" not in " ".join(_dockerfile_install_command()), "no extras: the service alone"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "tests", "training", ".git"} <= set(ignored)


def test_compose_validates_with_two_replicas_behind_nginx() -> None:
    compose = require_tool("docker-compose")
    result = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    api, nginx = services["api"], services["nginx"]
    assert api["deploy"]["replicas"] == 2
    assert api["read_only"] is True and api["restart"] == "unless-stopped"
    assert "/ready" in " ".join(api["healthcheck"]["test"])
    assert any(str(p.get("published")) == "8000" for p in nginx["ports"])
    assert any(v.endswith("deploy/nginx.conf:/etc/nginx/nginx.conf:ro") for v in nginx["volumes"])


def test_nginx_retries_failed_requests_on_another_replica() -> None:
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    retry = re.search(r"proxy_next_upstream ([^;]+);", conf)
    assert retry and {"error", "timeout", "non_idempotent"} <= set(retry.group(1).split())


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    validate = _venv_tool("kubernetes-validate")
    manifests = sorted(str(p) for p in K8S_DIR.glob("*.yaml"))
    result = subprocess.run(
        [validate, "--strict", "-k", KUBERNETES_VERSION, *manifests], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {yaml.safe_load(Path(m).read_text())["kind"] for m in manifests}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_the_deployment_probes_and_locks_down_the_pod() -> None:
    deployment = yaml.safe_load((K8S_DIR / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def _dockerfile_install_command() -> list[str]:
    """The `RUN pip install ...` line of the Dockerfile, word for word."""
    found = re.search(r"^RUN (pip install [^\n]+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert found, "the Dockerfile installs the service with a RUN pip install line"
    return found.group(1).split()


def _dockerfile_env() -> dict[str, str]:
    block = re.search(r"^ENV PATH=\S+ \\\n((?:\s+\S+=\S+(?: \\)?\n)+)", (REPO / "Dockerfile").read_text(), re.M)
    assert block
    return dict(line.strip().rstrip(" \\").split("=", 1) for line in block.group(1).splitlines())


def test_the_container_install_path_serves_without_missing_dependencies(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip, *arguments = _dockerfile_install_command()
    assert pip == "pip"
    install = subprocess.run(
        [str(venv / "bin" / "pip"), *arguments], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout
    assert "torch" not in freeze.lower()
    port = free_port()
    env = {**os.environ, **_dockerfile_env(), "NNSERVE_PORT": str(port), "NNSERVE_MODELS_DIR": str(MODELS_DIR),
           "NNSERVE_HOST": "127.0.0.1"}
    process = subprocess.Popen([str(venv / "bin" / "nnserve")], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the installed service exited"
            time.sleep(0.2)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict/wine", json={"guests": ["Dahlia", "Stiffy"]})
        assert answer.status_code == 200
        assert answer.json()["bottles"] == pytest.approx(4.3, abs=0.2)
    finally:
        process.terminate()
        process.wait(30)


def test_several_workers_serve_the_same_answers(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(NNSERVE_WORKERS="2")
    with server.client() as http:
        answers = {http.post("/predict/wine", json={"guests": ["Dahlia"]}).json()["bottles"] for _ in range(20)}
    assert len(answers) == 1 and answers.pop() == pytest.approx(3.0, abs=0.2)

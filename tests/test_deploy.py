"""Deployment artefacts, checked in seconds by the tools that read them: hadolint on the
Dockerfile, Compose's own validation of docker-compose.yml, the Kubernetes schemas on deploy/k8s/,
and what ties them together (image names, users, ports, health checks). tests/test_docker.py
builds the image and runs the compose stack on a real Docker engine."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service import __version__
from service.config import Settings

from support.server import REPO, StartServer, is_json_object
from support.tools import require_tool

K8S_DIR = REPO / "deploy" / "k8s"
# The oldest Kubernetes with everything the manifests use (the preStop sleep action) and the
# newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
WINE_PARTY = {"guests": ["Dahlia", "Stiffy"]}
WINE_BOTTLES = 4.3
# The variables docker-compose.yml reads; .ci/run exports the first two (deploy/local-images.sh).
COMPOSE_VARIABLES = (
    "PYTHON_IMAGE",
    "NGINX_IMAGE",
    "NNSERVE_IMAGE",
    "NNSERVE_HOST_PORT",
    "NNSERVE_GRPC_HOST_PORT",
)


@dataclass
class Stage:
    """One FROM stage of the Dockerfile: its instructions in order, continuation lines joined."""

    instructions: list[tuple[str, str]]

    def args(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        pairs = (word.split("=", 1) for args in self.args("ENV") for word in shlex.split(args))
        return {key: value for key, value in pairs}

    def command(self, keyword: str) -> list[str]:
        """The exec-form command of CMD or HEALTHCHECK (after the HEALTHCHECK's options)."""
        [args] = self.args(keyword)
        command: list[str] = json.loads(args[args.index("[") :])
        return command

    def run(self, containing: str) -> list[str]:
        """The one RUN command containing `containing`, without RUN's own --flags."""
        [args] = [args for args in self.args("RUN") if containing in args]
        words = shlex.split(args)
        while words[0].startswith("--"):
            words.pop(0)
        return words


def dockerfile() -> tuple[Stage, list[Stage]]:
    """The instructions before the first FROM (the ARGs that FROM lines may use), and the stages."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    preamble, stages = Stage([]), []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append(Stage([]))
        (stages[-1] if stages else preamble).instructions.append((keyword.upper(), args.strip()))
    return preamble, stages


def dockerfile_stages() -> list[Stage]:
    return dockerfile()[1]


def base_image_default() -> str:
    """The default of the Dockerfile's PYTHON_IMAGE argument."""
    [default] = [
        args.split("=", 1)[1] for args in dockerfile()[0].args("ARG") if args.startswith("PYTHON_IMAGE=")
    ]
    return default


@cache
def _dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in (REPO / ".dockerignore").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps a context path out (fnmatch is close enough to Docker's rules
    for the plain patterns used there)."""
    return any(fnmatch(relative, pattern) for pattern in _dockerignore_patterns())


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = require_tool("hadolint", str(Path(sys.executable).parent / "hadolint"))
    result = subprocess.run([hadolint, "Dockerfile"], check=False, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    ignores = re.findall(r"hadolint ignore=.*", (REPO / "Dockerfile").read_text())
    assert not ignores, f"no rule is ignored: {ignores}"


def test_the_image_is_slim_non_root_and_runs_the_console_script() -> None:
    stages = dockerfile_stages()
    build, runtime = stages[0], stages[-1]
    assert base_image_default() == "python:3.11-slim"
    assert len(stages) >= 2 and all(
        stage.args("FROM")[0].split()[0] == "${PYTHON_IMAGE}" for stage in stages
    ), "every stage is built on the PYTHON_IMAGE argument, so a mirror or a stand-in can replace it"
    assert build.run("requirements.lock") == ["pip", "install", "--require-hashes", "-r", "requirements.lock"]
    service_alone = ["pip", "install", "--no-cache-dir", "--no-deps", "."]  # no [train] extra
    assert build.run("--no-deps") == service_alone
    assert re.fullmatch(r"\d+(:\d+)?", runtime.args("USER")[-1]), "a numeric non-root user"
    assert runtime.args("USER")[-1].split(":")[0] != "0"
    ports = [runtime.env()["NNSERVE_PORT"], runtime.env()["NNSERVE_GRPC_PORT"]]
    assert runtime.args("EXPOSE") == [" ".join(ports)] == ["8000 8081"], "REST and gRPC"
    assert runtime.command("CMD") == ["nnserve"]
    assert "/ready" in runtime.command("HEALTHCHECK")[-1]
    assert f"models {runtime.env()['NNSERVE_MODELS_DIR']}" in runtime.args("COPY")
    assert runtime.env()["NNSERVE_HOST"] == "0.0.0.0", "reachable from outside the container"
    for kept_out in (".venv", "tests", "training", "bench", ".git", "build"):
        assert dockerignored(kept_out), f"{kept_out} is kept out of the build context"


def test_the_log_stays_json_where_onnxruntime_cannot_write_its_home(start_server: StartServer) -> None:
    """A read-only root filesystem (the compose file, the Kubernetes pod) leaves the service no
    writable home. onnxruntime's telemetry then wrote a plain-text warning into the JSON log; the
    service turns that telemetry off. CI is emptied because onnxruntime keeps quiet under CI."""
    server = start_server(HOME="/dev/null", CI="")
    assert httpx.post(f"{server.url}/predict/wine", json=WINE_PARTY, timeout=10).status_code == 200
    lines = server.wait_for_log("/predict/wine").splitlines()
    not_json = [line for line in lines if not is_json_object(line)]
    assert lines and not not_json, not_json


def test_several_workers_serve_correct_predictions(start_server: StartServer) -> None:
    """NNSERVE_WORKERS=2 really runs two worker processes (uvicorn needs the import string the
    console script passes, not an app object) and they answer as one."""
    server = start_server(NNSERVE_WORKERS="2")
    deadline = time.monotonic() + 30
    while len(pids := set(re.findall(r"Started server process \[(\d+)\]", server.log()))) < 2:
        assert time.monotonic() < deadline, f"fewer than two workers started:\n{server.log()}"
        time.sleep(0.1)
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text()
    assert len(pids) == 2 and pids <= set(children.split()), (pids, children)

    def predict(_: int) -> float:
        # A new connection per request, so the kernel hands them to either worker.
        response = httpx.post(f"{server.url}/predict/wine", json=WINE_PARTY, timeout=10)
        assert response.status_code == 200, response.text
        return float(response.json()["bottles"])

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(predict, range(40), timeout=60))
    assert answers == pytest.approx([WINE_BOTTLES] * len(answers), abs=0.2)


def compose_config(**variables: str) -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it with these variables (and no others) set."""
    compose = require_tool("docker-compose")
    env = {key: value for key, value in os.environ.items() if key not in COMPOSE_VARIABLES}
    result = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config"],
        check=False,
        cwd=REPO,
        env={**env, **variables},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_runs_two_locked_down_replicas_behind_nginx() -> None:
    services = compose_config()["services"]
    api, nginx = services["api"], services["nginx"]
    assert api["build"] == {"context": str(REPO), "args": {"PYTHON_IMAGE": base_image_default()}}
    assert api["image"] == f"nnserve:{__version__}"
    assert api["deploy"]["replicas"] == 2
    assert api["read_only"] is True and api["tmpfs"] == ["/tmp"]
    assert api["restart"] == "unless-stopped"
    assert api["healthcheck"]["test"] == ["CMD", *dockerfile_stages()[-1].command("HEALTHCHECK")]
    assert nginx["image"] == "nginx:1.28-alpine"
    assert [(p["published"], p["target"]) for p in nginx["ports"]] == [(8000, 8000), (8081, 8081)]
    assert f"{REPO}/deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"


def test_compose_takes_base_images_image_name_and_port_from_the_environment() -> None:
    """What a machine without registry access needs (deploy/local-images.sh prints the first two)."""
    services = compose_config(
        PYTHON_IMAGE="mirror/python:3.11-slim",
        NGINX_IMAGE="mirror/nginx:1.28-alpine",
        NNSERVE_IMAGE="mirror/nnserve:1",
        NNSERVE_HOST_PORT="8080",
        NNSERVE_GRPC_HOST_PORT="9090",
    )["services"]
    assert services["api"]["build"]["args"] == {"PYTHON_IMAGE": "mirror/python:3.11-slim"}
    assert services["api"]["image"] == "mirror/nnserve:1"
    assert services["nginx"]["image"] == "mirror/nginx:1.28-alpine"
    assert [(p["published"], p["target"]) for p in services["nginx"]["ports"]] == [(8080, 8000), (9090, 8081)]


def test_nginx_conf_retries_predictions_on_another_replica() -> None:
    """tests/test_load_balancer.py shows the retries work; this pins why: POSTs included."""
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    retry = re.search(r"proxy_next_upstream ([^;]+);", conf)
    assert retry and {"error", "timeout", "http_502", "http_503", "non_idempotent"} <= set(
        retry.group(1).split()
    )
    assert re.search(r"^\s*server api:8000\b", conf, re.MULTILINE), "the upstream is compose's service name"


def k8s_manifests() -> list[Path]:
    """The manifests deploy/k8s/kustomization.yaml lists (`kubectl apply -k deploy/k8s`)."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return [K8S_DIR / name for name in kustomization["resources"]]


def test_the_kustomization_lists_every_manifest() -> None:
    manifests = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(path.name for path in k8s_manifests()) == sorted(manifests)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_schemas(version: str) -> None:
    validate = require_tool("kubernetes-validate", str(Path(sys.executable).parent / "kubernetes-validate"))
    manifests = sorted(str(p) for p in k8s_manifests())
    result = subprocess.run(
        [validate, "--strict", "-k", version, *manifests], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubectl_kustomize_renders_the_manifests() -> None:
    """What `kubectl apply -k deploy/k8s` sends. (A client-side dry run needs a reachable API
    server for its discovery, which these machines do not have.)"""
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = sorted((o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(result.stdout))
    listed = sorted(
        (m["kind"], m["metadata"]["name"]) for p in k8s_manifests() for m in [yaml.safe_load(p.read_text())]
    )
    assert rendered == listed


def k8s(kind: str) -> dict[str, Any]:
    """The one manifest of that kind in deploy/k8s/."""
    [manifest] = [m for p in k8s_manifests() if (m := yaml.safe_load(p.read_text()))["kind"] == kind]
    return dict(manifest)


def test_the_deployment_probes_and_locks_down_the_pod() -> None:
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
    assert container["startupProbe"]["grpc"]["port"] == grpc_port == 8081, "Kubernetes' gRPC probe"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile_stages()[-1].args("USER")[-1].split(":")[0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    grace = float(next(e["value"] for e in container["env"] if e["name"] == "NNSERVE_SHUTDOWN_GRACE_SECONDS"))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace, "requests in flight drain before SIGKILL"


def test_the_kubernetes_objects_point_at_each_other() -> None:
    """What the schemas cannot see: names and labels that tie the four objects together."""
    deployment, service = k8s("Deployment"), k8s("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [port_names[p["targetPort"]] for p in service["spec"]["ports"]] == [8000, 8081]
    target = k8s("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    min_available = k8s("PodDisruptionBudget")["spec"]["minAvailable"]
    assert k8s("HorizontalPodAutoscaler")["spec"]["minReplicas"] > min_available, "drains can evict"
    assert container["image"] == compose_config()["services"]["api"]["image"] == f"nnserve:{__version__}"


def test_the_pods_read_their_keys_from_the_mounted_secret() -> None:
    """The key files are a Secret's items, at the paths the *_FILE settings name; no key is in
    the environment."""
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert not {"NNSERVE_API_KEYS", "NNSERVE_API_KEY", "NNSERVE_ADMIN_KEYS"} & env.keys()
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "keys"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "keys"]
    assert mount["readOnly"] is True and volume["secret"].get("optional") is not True
    files = {f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]}
    for setting in ("api_keys_file", "admin_keys_file"):
        assert setting in Settings.model_fields
        assert env[f"NNSERVE_{setting.upper()}"]["value"] in files, setting


def test_the_hpa_scales_on_the_queue_metric_the_service_exports_and_the_adapter_serves(
    client: httpx.Client,
) -> None:
    [queue] = [m["pods"] for m in k8s("HorizontalPodAutoscaler")["spec"]["metrics"] if m["type"] == "Pods"]
    assert {m["type"] for m in k8s("HorizontalPodAutoscaler")["spec"]["metrics"]} == {"Resource", "Pods"}
    name = queue["metric"]["name"]
    adapter = yaml.safe_load((K8S_DIR / "prometheus-adapter" / "values.yaml").read_text())
    [rule] = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == name]
    series = rule["seriesQuery"].split("{")[0]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    exported = client.get("/metrics").text
    assert re.search(rf"^# TYPE {series} gauge$", exported, re.MULTILINE), (
        f"the service exports no gauge {series}"
    )
    annotations = k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"


SWARM_DIR = REPO / "deploy" / "swarm"


def test_the_swarm_stack_rolls_updates_health_first_and_rolls_back() -> None:
    """tests/test_swarm.py runs the stack; this pins the settings that make it safe."""
    stack = yaml.safe_load((SWARM_DIR / "stack.yml").read_text())
    api = stack["services"]["api"]
    assert api["healthcheck"]["test"] == ["CMD", *dockerfile_stages()[-1].command("HEALTHCHECK")]
    deploy = api["deploy"]
    assert deploy["endpoint_mode"] == "dnsrr", "no virtual IP: it needs IPVS"
    assert deploy["update_config"]["order"] == deploy["rollback_config"]["order"] == "start-first"
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["update_config"]["parallelism"] == 1
    assert {"cpus", "memory"} <= deploy["resources"]["limits"].keys()
    assert api["read_only"] is True
    keyed = yaml.safe_load((SWARM_DIR / "api-keys.yml").read_text())["services"]["api"]
    for service, setting in ((api, "NNSERVE_ADMIN_KEYS_FILE"), (keyed, "NNSERVE_API_KEYS_FILE")):
        [secret] = service["secrets"]
        assert service["environment"][setting] == f"/run/secrets/{secret['target']}"
        assert secret["uid"] == dockerfile_stages()[-1].args("USER")[-1].split(":")[0], (
            "the service's user reads it"
        )
    ports = stack["services"]["nginx"]["ports"]
    assert {port["target"] for port in ports} == {8000, 8081}, "REST and gRPC"
    assert {port["mode"] for port in ports} == {"host"}, "the ingress routing mesh needs IPVS too"
    # Spread over the label deploy/swarm.sh up --nodes gives each node, never capped a node: the
    # replicas of a drained or lost node must find room on the nodes left.
    [preference] = deploy["placement"]["preferences"]
    label = preference["spread"].removeprefix("node.labels.")
    assert f"ZONE_LABEL={label}\n" in (REPO / "deploy" / "swarm.sh").read_text()
    assert "max_replicas_per_node" not in deploy["placement"]


def test_the_swarm_nginx_conf_re_resolves_the_replicas_and_retries_predictions() -> None:
    conf = (SWARM_DIR / "nginx.conf").read_text()
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", conf, re.MULTILINE), (
        "Docker's DNS, asked again"
    )
    assert re.search(r"proxy_pass http://\$\w+:8000;", conf), "a variable: resolved while nginx runs"
    retry = re.search(r"proxy_next_upstream ([^;]+);", conf)
    assert retry and {"error", "timeout", "http_502", "http_503", "non_idempotent"} <= set(
        retry.group(1).split()
    )


def test_the_deploy_scripts_pass_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    scripts = [*sorted(str(p) for p in (REPO / "deploy").glob("*.sh")), str(REPO / ".ci" / "run")]
    result = subprocess.run([shellcheck, *scripts], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

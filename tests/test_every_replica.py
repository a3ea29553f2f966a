"""An operator loads or unloads a model on every replica behind a load balancer with
deploy/every-replica.sh. The replicas here are real nnserve processes; `docker` and `kubectl` are
stand-ins that list them and run the script's call inside "each replica" as those tools would: the
same Python, with the replica's own port and admin keys in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.server import REPO, Server, StartServer
from support.tools import require_tool

SCRIPT = REPO / "deploy" / "every-replica.sh"
KEY = "replica-admin-5e0d"
# `docker compose ps -q api` and `kubectl get pods ... -o name` list the replicas; `docker exec ID
# python -c CODE ARG` and `kubectl exec POD -- python -c CODE ARG` run CODE with that replica's
# environment (REPLICAS: name -> [port, admin keys, or the path of a file of them]).
STAND_IN = """#!{python}
import json, os, subprocess, sys
replicas = json.loads(os.environ["REPLICAS"])
args = sys.argv[1:]
if args[:2] == ["compose", "ps"] or args[:2] == ["get", "pods"]:
    print("\\n".join(replicas))
    sys.exit(0)
name = next(arg for arg in args if arg in replicas)
code, arg = args[args.index("-c") + 1], args[-1]
port, keys = replicas[name]
variable = "NNSERVE_ADMIN_KEYS_FILE" if keys.startswith("/") else "NNSERVE_ADMIN_KEYS"
env = {{**os.environ, "NNSERVE_PORT": str(port), variable: keys}}
sys.exit(subprocess.run([sys.executable, "-c", code, arg], env=env).returncode)
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    for tool in ("docker", "kubectl"):
        path = tmp_path / tool
        path.write_text(STAND_IN.format(python=sys.executable))
        path.chmod(0o755)
    return tmp_path


def _run(
    stand_ins: Path, mode: str, path: str, replicas: dict[str, tuple[int, str]]
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{stand_ins}:{os.environ['PATH']}", "REPLICAS": json.dumps(replicas)}
    return subprocess.run(
        [require_tool("bash"), str(SCRIPT), mode, path],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _spam_status(server: Server) -> int:
    return httpx.post(f"{server.url}/predict/spam", json={"text": "hello"}).status_code


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("compose", ["3f2a9c0d1e4b", "8b7c6d5e4f3a"]),
        ("kubernetes", ["pod/nnserve-7d9f-a", "pod/nnserve-7d9f-b"]),
    ],
)
def test_an_admin_call_reaches_every_replica(
    start_server: StartServer, stand_ins: Path, mode: str, names: list[str]
) -> None:
    keys = f"{KEY},second-admin-key"
    servers = [start_server(NNSERVE_ADMIN_KEYS=keys) for _ in names]
    replicas = {name: (server.port, keys) for name, server in zip(names, servers, strict=True)}
    unloaded = _run(stand_ins, mode, "/v2/repository/models/spam/unload", replicas)
    print(f"\n{mode}: {unloaded.stdout}")
    assert unloaded.returncode == 0, unloaded.stdout + unloaded.stderr
    assert unloaded.stdout.count('200 {"name":"spam","state":"UNLOADED"}') == len(servers)
    assert [_spam_status(server) for server in servers] == [404] * len(servers)
    loaded = _run(stand_ins, mode, "/v2/repository/models/spam/load", replicas)
    assert loaded.returncode == 0 and [_spam_status(server) for server in servers] == [200] * len(servers)


def test_a_replica_that_refuses_fails_the_run(start_server: StartServer, stand_ins: Path) -> None:
    keyed, unkeyed = start_server(NNSERVE_ADMIN_KEYS=KEY), start_server()
    replicas = {"pod/keyed": (keyed.port, KEY), "pod/unkeyed": (unkeyed.port, KEY)}
    result = _run(stand_ins, "kubernetes", "/v2/repository/index", replicas)
    assert result.returncode == 1
    assert "200 [" in result.stdout and '403 {"error":"administrative endpoints are disabled' in result.stdout


def test_the_admin_key_comes_from_a_key_file_as_in_the_kubernetes_pods(
    start_server: StartServer, stand_ins: Path, tmp_path: Path
) -> None:
    """deploy/k8s mounts the keys as files (NNSERVE_ADMIN_KEYS_FILE): the script reads them there."""
    keys = tmp_path / "admin-keys"
    keys.write_text(f"{KEY}\nsecond-admin-key\n")
    server = start_server(NNSERVE_ADMIN_KEYS_FILE=str(keys))
    result = _run(
        stand_ins, "kubernetes", "/v2/repository/index", {"pod/nnserve-a": (server.port, str(keys))}
    )
    assert result.returncode == 0 and result.stdout.count("200 [") == 1, result.stdout + result.stderr


def test_only_admin_calls_are_sent(stand_ins: Path) -> None:
    assert _run(stand_ins, "compose", "/predict/wine", {}).returncode == 2

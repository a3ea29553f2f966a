"""nginx in front of two replicas (deploy/nginx.conf, as compose runs it): one replica is killed
with SIGKILL mid-stream and every request still gets a correct 200."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, StartServer, free_port, require_tool

REQUESTS = 400
KILL_AFTER = 150


def _local_conf(tmp_path: Path, ports: list[int], listen: int) -> Path:
    """deploy/nginx.conf with only the addresses changed: loopback replicas, a free port, and
    temporary files under tmp_path instead of /tmp."""
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    server_line = re.search(r"^\s*server api:8000 (.*);$", conf, re.M)
    assert server_line, "deploy/nginx.conf has one `server api:8000 ...;` upstream line"
    replicas = "\n".join(f"        server 127.0.0.1:{p} {server_line.group(1)};" for p in ports)
    conf = conf.replace(server_line.group(0), replicas)
    conf = conf.replace("listen 8000;", f"listen 127.0.0.1:{listen};").replace("/tmp/", f"{tmp_path}/")
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    return path


def test_a_replica_killed_mid_stream_costs_no_request(start_server: StartServer, tmp_path: Path) -> None:
    nginx = require_tool("nginx", "/usr/sbin/nginx")
    replicas = [start_server(), start_server()]
    listen = free_port()
    conf = _local_conf(tmp_path, [r.port for r in replicas], listen)
    balancer = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(f"http://127.0.0.1:{listen}/ready", balancer)
        results: list[tuple[int, float | None]] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=10) as http:
            for i in range(REQUESTS):
                if i == KILL_AFTER:
                    threading.Thread(target=replicas[0].stop, args=(signal.SIGKILL,)).start()
                response = http.post("/predict/wine", json={"guests": ["Dahlia", "Stiffy"]})
                bottles = response.json().get("bottles") if response.status_code == 200 else None
                results.append((response.status_code, bottles))
        failures = [r for r in results if r[0] != 200 or r[1] is None or abs(r[1] - 4.3) > 0.2]
        print(f"\nload balancer: {len(results)} requests, replica 0 killed after {KILL_AFTER}, "
              f"{len(failures)} failures")
        assert replicas[0].process.poll() is not None, "the replica was not killed"
        assert not failures, failures[:5]
    finally:
        balancer.terminate()
        balancer.wait(10)


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nginx exited: {process.stdout.read().decode() if process.stdout else ''}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("nginx did not answer")

"""The server processes make bench drives, each started by the tests' own launcher
(tests/support/server.py) on a free port: nnserve as `make serve` runs it, and the reference
apps of bench/reference.py under uvicorn, configured as nnserve runs uvicorn."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from support.server import Server, launch


def nnserve(workdir: Path, **env: Any) -> tuple[Server, float]:
    """The service (access log and metrics on, as shipped) and its seconds from start to ready."""
    started = time.perf_counter()
    server = launch(workdir, **env)
    return server, time.perf_counter() - started


def reference(workdir: Path, app: str, workers: int = 1) -> Server:
    """bench/reference.py's `app` under uvicorn."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"bench.reference:{app}",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "off",
    ]
    return launch(workdir, command=command, ready_path="/")


def rss_mb(server: Server) -> float:
    return server.status_kib("VmRSS") / 1024


def mean_batch_sizes(server: Server) -> dict[str, float]:
    metrics = httpx.get(server.url + "/metrics").text
    sums = dict(re.findall(r'nnserve_batch_size_sum\{model="(\w+)",version="\d+"\} (\S+)', metrics))
    counts = dict(re.findall(r'nnserve_batch_size_count\{model="(\w+)",version="\d+"\} (\S+)', metrics))
    return {m: float(sums[m]) / float(counts[m]) for m in sums if float(counts[m])}

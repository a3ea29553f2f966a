"""wrk driving: one run of a case against one server, and the interleaved rounds that make a
figure (each variant in turn, several times, the median of each), so machine drift and passing
noise hit the reference and nnserve alike."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.cases import Case
from bench.worst_case import server_cpu_seconds

from support.server import Server

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # each figure split in rounds; medians reported
ROUND_SECONDS = max(1, round(SECONDS / ROUNDS))
LUA = """
wrk.method = os.getenv("BENCH_METHOD")
local path = os.getenv("BENCH_BODY")
if path ~= "" then
  local f = io.open(path, "rb"); wrk.body = f:read("*a"); f.close()
  wrk.headers["Content-Type"] = os.getenv("BENCH_TYPE")
  local header = os.getenv("BENCH_HEADER_LENGTH")
  if header ~= "" then wrk.headers["Inference-Header-Content-Length"] = header end
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass
class Run:
    case: str
    connections: int
    variant: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float = float("nan")  # the server's CPU per request: its every thread and worker


Variant = tuple[str, Server, Case]  # (variant name, server, case)


def tool_path(command: str, package: str) -> str:
    """A load generator's path, installed from Debian's `package` when missing and run as root."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
        return shutil.which(command) or sys.exit(f"{command} did not install")
    sys.exit(f"{command} is missing: install Debian's {package} package (apt-get install {package})")


class Wrk:
    """wrk and its Lua script (which sends each case's body and prints the figures)."""

    def __init__(self, workdir: Path) -> None:
        self.path = tool_path("wrk", "wrk")
        self.workdir = workdir
        self.lua = workdir / "bench.lua"
        self.lua.write_text(LUA)

    def start(self, url: str, case: Case, connections: int, seconds: float) -> subprocess.Popen[str]:
        body_path = ""
        if case.body:
            body_file = self.workdir / f"body-{abs(hash(case.body))}.bin"
            body_file.write_bytes(case.body)
            body_path = str(body_file)
        env = {
            **os.environ,
            "BENCH_METHOD": case.method,
            "BENCH_BODY": body_path,
            "BENCH_TYPE": case.content_type,
            "BENCH_HEADER_LENGTH": "" if case.header_length is None else str(case.header_length),
        }
        threads = min(2, connections)
        command = [self.path, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(self.lua)]
        return subprocess.Popen(command + [url + case.path], env=env, stdout=subprocess.PIPE, text=True)

    def run(self, server: Server, case: Case, connections: int, variant: str, seconds: float) -> Run:
        """One run, with the server's CPU per request over it (anything else the server did
        meanwhile, such as explanations beside it, counts too)."""
        before = server_cpu_seconds(server.process.pid)
        run = self.finish(self.start(server.url, case, connections, seconds), case, connections, variant)
        run.cpu_us = (server_cpu_seconds(server.process.pid) - before) * 1e6 / max(1, run.requests)
        return run

    @staticmethod
    def finish(process: subprocess.Popen[str], case: Case, connections: int, variant: str) -> Run:
        output, _ = process.communicate()
        if process.returncode:
            sys.exit(f"wrk failed on {case.name}: exit {process.returncode}")
        requests, duration_us, p50, p99, status_errors, socket_errors = map(
            int,
            re.search(r"^BENCH (.*)$", output, re.M).group(1).split(),  # type: ignore[union-attr]  # the Lua script prints it
        )
        return Run(
            case.name,
            connections,
            variant,
            requests / (duration_us / 1e6),
            p50 / 1000,
            p99 / 1000,
            status_errors + socket_errors,
            requests,
        )


def median(case: str, rounds: list[Run]) -> Run:
    return Run(
        case,
        rounds[0].connections,
        rounds[0].variant,
        float(np.median([r.rps for r in rounds])),
        float(np.median([r.p50_ms for r in rounds])),
        float(np.median([r.p99_ms for r in rounds])),
        sum(r.errors for r in rounds),
        sum(r.requests for r in rounds),
        float(np.median([r.cpu_us for r in rounds])),
    )


def show(run: Run) -> None:
    print(
        f"  {run.case:32s} c={run.connections:<3d} {run.variant:12s} {run.rps:9.0f} req/s "
        f"p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:6.2f} ms, server CPU {run.cpu_us:5.0f} us a request",
        flush=True,
    )


def interleaved(wrk: Wrk, name: str, connections: int, variants: list[Variant]) -> list[Run]:
    """Each variant in turn, ROUNDS times; the median of each variant's rounds."""
    rounds = [
        [wrk.run(server, target, connections, variant, ROUND_SECONDS) for variant, server, target in variants]
        for _ in range(ROUNDS)
    ]
    runs = [median(name, list(measured)) for measured in zip(*rounds, strict=True)]
    for run in runs:
        show(run)
    return runs


def warm(url: str, cases: list[Case]) -> None:
    for case in cases:
        httpx.request(
            case.method, url + case.path, content=case.body, headers=case.headers
        ).raise_for_status()

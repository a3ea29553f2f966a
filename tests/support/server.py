"""A real `nnserve` process on a free port, for the tests that need one (start-up, shutdown,
overload, reload, load balancer, browser, soak), and the system tools those tests drive."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
NNSERVE = Path(sys.executable).parent / "nnserve"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running `nnserve` process; its combined stdout/stderr is in `log_path`."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def status_kib(self, field: str = "VmRSS") -> int:
        """A memory figure of the process from /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
        assert found, f"{field} not in /proc/{self.process.pid}/status"
        return int(found.group(1))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5, count: int = 1) -> str:
        """The log once `count` whole lines of it contain `text`: a request's line is written
        after its response is sent, so it can trail what the client has already seen by a
        moment, and a line being written is not there until its end is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            whole = log[: log.rfind("\n") + 1]
            if sum(text in line for line in whole.splitlines()) >= count:
                return log
            time.sleep(0.05)
        return self.log()

    def metrics(self) -> Callable[..., float]:
        """One scrape of /metrics, as a function: (name, **labels) -> the sum of the samples of
        that name whose labels include `labels`."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

        def value(name: str, **labels: str) -> float:
            return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

        return value

    def wait_for_metrics(
        self, seen: Callable[[Callable[..., float]], bool], what: str, timeout: float = 15
    ) -> None:
        """Returns once one scrape shows what `seen` looks for: a test that needs work in flight
        waits for the server to show it, not for a guessed while."""
        deadline = time.monotonic() + timeout
        while not seen(self.metrics()):
            assert time.monotonic() < deadline, f"not seen on /metrics in {timeout} s: {what}"
            time.sleep(0.02)

    def wait_until_inferring(self, model: str = "wine", timeout: float = 15) -> None:
        """Returns once a call of `model` is inside onnxruntime (nnserve_inferences_running)."""
        self.wait_for_metrics(
            lambda value: value("nnserve_inferences_running", model=model) >= 1,
            f"a {model} call inside onnxruntime",
            timeout,
        )

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


StartServer = Callable[..., Server]


def _wait_until_up(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.005)  # make bench times start-up with it
    server.stop()
    raise RuntimeError(f"nnserve did not answer 200 on {path} in {timeout}s:\n{server.log()}")


def clean_environment() -> dict[str, str]:
    """The test process's environment without what configures nnserve or its traces (NNSERVE_*,
    OTEL_*): a server started by a test is configured by the test alone, not by the shell of
    whoever runs it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NNSERVE_", "OTEL_"))}


def launch(
    log_dir: Path,
    *,
    wait_ready: bool = True,
    timeout: float = 60,
    executable: Path = NNSERVE,
    cwd: Path = REPO,
    command: list[str] | None = None,
    ready_path: str | None = None,
    **env_overrides: str,
) -> Server:
    """Starts the console script on a free port (and gRPC on another) with NNSERVE_* overrides
    and waits until it answers 200 on /ready (or /health); the development install's console
    script runs this checkout's `service` (PYTHONPATH: the editable install may point at another
    worktree), in a clean environment (clean_environment); its stdout and stderr go to
    `log_dir/server-PORT.log`. `command` runs another server instead (make bench's reference
    apps), with `{port}` in it replaced by the port, ready when `ready_path` answers 200."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    env = {
        **clean_environment(),
        **({"PYTHONPATH": str(REPO)} if command is None and executable == NNSERVE else {}),
        "NNSERVE_HOST": "127.0.0.1",
        "NNSERVE_PORT": str(port),
        "NNSERVE_GRPC_PORT": str(free_port()),  # not 8081: servers run side by side
        "NNSERVE_MODELS_DIR": str(MODELS_DIR),
        "NNSERVE_DRAIN_SECONDS": "0",  # stop() at once; tests/test_shutdown.py drains for real
        **{k: str(v) for k, v in env_overrides.items()},
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in command or [str(executable)]],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log_path, env_overrides, int(env["NNSERVE_GRPC_PORT"]))
    try:
        _wait_until_up(server, ready_path or ("/ready" if wait_ready else "/health"), timeout)
    except RuntimeError:
        server.stop()
        raise
    return server


def is_json_object(line: str) -> bool:
    """Whether a log line is one JSON object: the service's promise for every line it writes."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False

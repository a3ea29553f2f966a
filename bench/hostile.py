"""What a hostile client costs a real server (issue 30): the memory 400 unfinished ~1 MB gRPC calls
hold, how long a drop-in made slow by its input stalls the event loop (and whether the request's
deadline holds), and the memory a drop-in declaring a huge fixed input takes at start-up.

    PYTHONPATH=tests .venv/bin/python -m bench.hostile [unfinished|runaway|warmup ...]

tests/test_hostile_grpc.py holds the server to these bounds; this prints the figures.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from dropin_models import save, spin_graph, v2_request, wide_input_graph

from support.server import Server, launch
from support.unfinished_grpc import UnfinishedCalls

CALLS, MESSAGE_BYTES = 400, 1_000_000
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SPIN_TRIPS = 100_000  # about 0.6 s of onnxruntime on this machine's cores


def unfinished_calls(server: Server, calls: int = CALLS, size: int = MESSAGE_BYTES) -> dict[str, float]:
    """RSS (MB) before, while `calls` calls on one connection each hold all but the last byte of
    a message, and 3 s after the client left."""
    before = server.status_kib() / 1024
    with UnfinishedCalls(("127.0.0.1", server.grpc_port), MODEL_INFER, calls, size) as attack:
        attack.send()
        during = server.status_kib() / 1024
        sent = attack.sent / 1e6
        refused = len(attack.closed)
    time.sleep(3)
    return {
        "rss_before_mb": before,
        "rss_during_mb": during,
        "rss_after_mb": server.status_kib() / 1024,
        "growth_mb": during - before,
        "sent_mb": sent,
        "calls_ended_by_server": refused,
    }


def runaway_model(server: Server, trips: int = SPIN_TRIPS) -> dict[str, float]:
    """One request that makes the `spin` drop-in slow, sent with X-Request-Timeout: 0.05, while
    /health is asked every 10 ms: the slowest /health, and the slow request's status and time."""
    slowest = 0.0
    done = threading.Event()

    def probe() -> None:
        nonlocal slowest
        with httpx.Client(base_url=server.url) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get("/health")
                slowest = max(slowest, time.perf_counter() - started)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.2)
    body = v2_request("x", np.array([[trips]], np.float32))
    started = time.perf_counter()
    answer = httpx.post(
        f"{server.url}/v2/models/spin/infer", json=body, headers={"X-Request-Timeout": "0.05"}, timeout=60
    )
    took = time.perf_counter() - started
    time.sleep(0.2)
    done.set()
    prober.join()
    return {"status": answer.status_code, "request_s": took, "slowest_health_s": slowest}


def spin_models(folder: Path) -> Path:
    save(spin_graph(), folder / "spin" / "1")
    return folder


def wide_models(folder: Path) -> Path:
    save(wide_input_graph(), folder / "wide" / "1")
    return folder


def main(which: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    if "unfinished" in which:
        server = launch(work)
        try:
            print("unfinished gRPC calls:", unfinished_calls(server))
        finally:
            server.stop()
    if "runaway" in which:
        server = launch(work, NNSERVE_MODELS_DIR=str(spin_models(work / "spin")))
        try:
            print("runaway drop-in:", runaway_model(server))
        finally:
            server.stop()
    if "warmup" in which:
        server = launch(work, wait_ready=False, NNSERVE_MODELS_DIR=str(wide_models(work / "wide")))
        try:
            ready = httpx.get(f"{server.url}/ready").json()
            print("wide-input drop-in: peak RSS", server.status_kib("VmHWM") / 1024, "MB; /ready", ready)
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:] or ["unfinished", "runaway", "warmup"])

"""make bench: what the serving layer adds on top of the models, measured in one run.

Starts two `nnserve` processes on the committed models (batching on, batching off), then for each
endpoint and connection count runs wrk against the bare ceiling (a constant-JSON route on the same
stack), the endpoint with batching on and with batching off, back to back and in several rounds,
so that machine drift and passing noise hit all three alike; each figure is the median of its
rounds, and ratios are taken against the bare runs next to them. It also measures raw
onnxruntime in-process, resident memory after warm-up and the time from start to ready, prints one
table and the targets met, and writes it all to bench/results/.
"""

from __future__ import annotations

import base64
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from service.features import pixels_to_digit

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MODELS = REPO / "models"
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # each run split in rounds; medians reported
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,32,64").split(",")]
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
class Case:
    name: str
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"
    header_length: int | None = None
    model: str = ""


@dataclass
class Run:
    case: str
    connections: int
    variant: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _latest_version(name: str) -> Path:
    return max((p for p in (MODELS / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _samples(name: str) -> list[dict]:
    return json.loads((_latest_version(name) / "samples.json").read_text())["items"]


def build_cases() -> list[Case]:
    spam_texts = [s["input"]["text"] for s in _samples("spam")]
    spam = min(spam_texts, key=lambda t: abs(len(t.encode()) - 2048))
    pixels = _samples("digit")[0]["input"]["pixels"]
    gray = (255 - np.asarray(pixels).reshape(28, 28) * 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(gray).resize((64, 64)).save(png, "PNG")
    # V2 clients send the model's own input: the normalised 28x28 tensor.
    tensor = pixels_to_digit(np.asarray(pixels, dtype=np.float32))[np.newaxis, np.newaxis]
    v2_json = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                      "data": tensor.ravel().tolist()}]}).encode()
    blob = tensor.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return [
        Case("wine (3 guests)", "POST", "/predict/wine",
             json.dumps({"guests": ["Dahlia", "Stiffy", "Bertie"]}).encode(), model="wine"),
        Case(f"spam ({len(spam.encode())} B email)", "POST", "/predict/spam",
             json.dumps({"text": spam}).encode(), model="spam"),
        Case("digit (784 pixels)", "POST", "/predict/digit", json.dumps({"pixels": pixels}).encode(), model="digit"),
        Case("digit (64x64 PNG)", "POST", "/predict/digit",
             json.dumps({"image": base64.b64encode(png.getvalue()).decode()}).encode(), model="digit"),
        Case("V2 digit (JSON)", "POST", "/v2/models/digit/infer", v2_json, model="digit"),
        Case("V2 digit (binary)", "POST", "/v2/models/digit/infer", header + blob,
             "application/octet-stream", len(header), model="digit"),
    ]


BARE = Case("bare ceiling (constant JSON)", "GET", "/bench/constant")


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return shutil.which("wrk") or sys.exit("wrk did not install")
    sys.exit("wrk is missing: install Debian's wrk package (apt-get install wrk)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """One `nnserve` process, as `make serve` runs it, on a free loopback port."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / f"server-{self.port}.log").open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "nnserve")],
            env={**os.environ, "NNSERVE_HOST": "127.0.0.1", "NNSERVE_PORT": str(self.port),
                 "NNSERVE_MODELS_DIR": str(MODELS), "NNSERVE_BENCH_ROUTES": "true", **env},
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        while True:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.perf_counter() - started > 60:
                sys.exit(f"nnserve did not become ready; see {self.log.name}")
            time.sleep(0.005)
        self.start_to_ready_s = time.perf_counter() - started

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def mean_batch_sizes(self) -> dict[str, float]:
        metrics = httpx.get(self.url + "/metrics").text
        sums = dict(re.findall(r'nnserve_batch_size_sum\{model="(\w+)",version="\d+"\} (\S+)', metrics))
        counts = dict(re.findall(r'nnserve_batch_size_count\{model="(\w+)",version="\d+"\} (\S+)', metrics))
        return {m: float(sums[m]) / float(counts[m]) for m in sums if float(counts[m])}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def run_wrk(wrk: str, lua: Path, workdir: Path, service: Service, case: Case, connections: int,
            variant: str, seconds: int) -> Run:
    body_path = ""
    if case.body:
        body_file = workdir / "body.bin"
        body_file.write_bytes(case.body)
        body_path = str(body_file)
    env = {**os.environ, "BENCH_METHOD": case.method, "BENCH_BODY": body_path, "BENCH_TYPE": case.content_type,
           "BENCH_HEADER_LENGTH": "" if case.header_length is None else str(case.header_length)}
    threads = min(2, connections)
    output = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(lua), service.url + case.path],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    requests, duration_us, p50, p99, status_errors, socket_errors = map(
        int, re.search(r"^BENCH (.*)$", output, re.M).group(1).split()  # type: ignore[union-attr]
    )
    return Run(case.name, connections, variant, requests / (duration_us / 1e6), p50 / 1000, p99 / 1000,
               status_errors + socket_errors)


def _median(case: str, rounds: list[Run]) -> Run:
    return Run(case, rounds[0].connections, rounds[0].variant,
               float(np.median([r.rps for r in rounds])), float(np.median([r.p50_ms for r in rounds])),
               float(np.median([r.p99_ms for r in rounds])), sum(r.errors for r in rounds))


def raw_onnxruntime(batch_sizes: dict[str, float]) -> list[dict[str, float | str | int]]:
    """Calls per second of each model in-process: the floor under any server's latency."""
    rows = []
    for name in ("wine", "spam", "digit"):
        folder = _latest_version(name)
        card = json.loads((folder / "card.json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        spec = card["inputs"][0]
        for batch in sorted({1, max(1, round(batch_sizes.get(name, 1)))}):
            x = np.zeros([batch if d == -1 else d for d in spec["shape"]], dtype=np.float32)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                session.run(None, {spec["name"]: x})
                calls += 1
            seconds = time.perf_counter() - started
            rows.append({"model": name, "batch": batch, "calls_per_s": calls / seconds,
                         "rows_per_s": calls * batch / seconds, "us_per_call": seconds / calls * 1e6})
    return rows


def _ratio(runs: list[Run], case: str, connections: int, variant: str) -> float:
    by = {(r.case, r.connections, r.variant): r for r in runs}
    return by[(case, connections, variant)].rps / by[(case, connections, "bare")].rps


def check_targets(runs: list[Run], rss_mb: float, start_s: float) -> list[tuple[str, bool, str]]:
    by = {(r.case, r.connections, r.variant): r for r in runs}
    names = {r.case for r in runs}
    find = {key: next(n for n in names if n.startswith(key)) for key in ("wine", "spam", "digit (784", "V2 digit (binary")}
    targets = []
    for key, floor in (("wine", 0.75), ("spam", 0.45), ("digit (784", 0.45), ("V2 digit (binary", 0.5)):
        if (find[key], 32, "on") in by:
            ratio = _ratio(runs, find[key], 32, "on")
            targets.append((f"{find[key]} >= {floor}x bare at 32 connections", ratio >= floor, f"{ratio:.2f}x"))
    measured = {r.connections for r in runs}
    for connections in (32, 64):
        if connections not in measured:
            continue
        slower = [n for n in names if by[(n, connections, "on")].rps < by[(n, connections, "off")].rps * 0.98]
        targets.append((f"batching on no slower than off at {connections} connections", not slower,
                        f"slower: {slower}" if slower else "all"))
    if 1 in measured:
        lagging = [n for n in names if by[(n, 1, "on")].p50_ms > 1.1 * by[(n, 1, "off")].p50_ms]
        targets.append(("batching on, 1 connection: p50 within 10% of off", not lagging,
                        f"over: {lagging}" if lagging else "all"))
    if 32 in measured:
        over = [n for n in names if by[(n, 32, "on")].p99_ms > 3 * by[(n, 32, "bare")].p99_ms]
        targets.append(("p99 at 32 connections <= 3x the bare p99", not over, f"over: {over}" if over else "all"))
    targets.append(("resident memory with all models <= 150 MB", rss_mb <= 150, f"{rss_mb:.0f} MB"))
    targets.append(("start to ready <= 1.5 s", start_s <= 1.5, f"{start_s:.2f} s"))
    return targets


def main() -> None:
    wrk = wrk_path()
    cases = build_cases()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        lua = workdir / "bench.lua"
        lua.write_text(LUA)
        batching_on = Service(workdir)
        batching_off = Service(workdir, NNSERVE_BATCHING="false")
        for service in (batching_on, batching_off):
            for case in cases:
                httpx.request(case.method, service.url + case.path, content=case.body, headers={
                    "Content-Type": case.content_type,
                    **({"Inference-Header-Content-Length": str(case.header_length)} if case.header_length else {}),
                }).raise_for_status()
        rss_mb = batching_on.rss_mb()
        runs: list[Run] = []
        seconds = max(1, round(SECONDS / ROUNDS))
        try:
            for connections in CONNECTIONS:
                for case in cases:
                    variants = (("bare", batching_on, BARE), ("on", batching_on, case), ("off", batching_off, case))
                    rounds = [[run_wrk(wrk, lua, workdir, service, target, connections, variant, seconds)
                               for variant, service, target in variants] for _ in range(ROUNDS)]
                    for measured in zip(*rounds, strict=True):
                        run = _median(case.name, list(measured))
                        runs.append(run)
                        print(f"  {case.name:28s} c={connections:<3d} {run.variant:4s} {run.rps:9.0f} req/s "
                              f"p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:6.2f} ms", flush=True)
            batch_sizes = batching_on.mean_batch_sizes()
        finally:
            start_s = batching_on.start_to_ready_s
            batching_on.stop()
            batching_off.stop()
    raw = raw_onnxruntime(batch_sizes)
    targets = check_targets(runs, rss_mb, start_s)
    report(runs, raw, targets, rss_mb, start_s, batch_sizes)


def report(runs: list[Run], raw: list[dict], targets: list[tuple[str, bool, str]], rss_mb: float,
           start_s: float, batch_sizes: dict[str, float]) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"nnserve bench: wrk, {SECONDS} s per figure ({ROUNDS} interleaved rounds, medians), "
             f"one server process each; {machine}", "",
             "| endpoint | conns | batching | req/s | p50 ms | p99 ms | vs bare |",
             "|---|---|---|---|---|---|---|"]
    bare = {(r.case, r.connections): r for r in runs if r.variant == "bare"}
    for r in runs:
        if r.variant == "bare":
            continue
        ratio = r.rps / bare[(r.case, r.connections)].rps
        lines.append(f"| {r.case} | {r.connections} | {r.variant} | {r.rps:,.0f} | {r.p50_ms:.2f} | "
                     f"{r.p99_ms:.2f} | {ratio:.2f}x |")
    for connections in sorted({r.connections for r in runs}):
        ceiling = [b for (case, c), b in bare.items() if c == connections]
        lines.append(f"| bare ceiling (mean of its {len(ceiling)} runs) | {connections} | - | "
                     f"{np.mean([b.rps for b in ceiling]):,.0f} | {np.mean([b.p50_ms for b in ceiling]):.2f} | "
                     f"{np.mean([b.p99_ms for b in ceiling]):.2f} | 1.00x |")
    lines += ["", "| raw onnxruntime (in-process, 1 thread) | batch | calls/s | rows/s | us/call |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['calls_per_s']:,.0f} | {r['rows_per_s']:,.0f} | "
              f"{r['us_per_call']:.1f} |" for r in raw]
    lines += ["", "Mean batch size formed with batching on: "
              + ", ".join(f"{m} {b:.1f}" for m, b in sorted(batch_sizes.items())),
              f"Resident memory after warm-up: {rss_mb:.0f} MB; start to ready: {start_s:.2f} s", "", "Targets:"]
    lines += [f"- [{'x' if met else ' '}] {name}: {value}" for name, met, value in targets]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {"created": stamp, "machine": machine, "seconds_per_figure": SECONDS, "rounds": ROUNDS,
                "runs": [asdict(r) for r in runs], "raw_onnxruntime": raw, "mean_batch_sizes": batch_sizes,
                "rss_mb": rss_mb, "start_to_ready_s": start_s,
                "targets": [{"target": n, "met": m, "value": v} for n, m, v in targets], "table": text}
    for path in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {RESULTS / (stamp + '.json')}")


if __name__ == "__main__":
    main()

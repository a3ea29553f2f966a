"""make bench, gRPC: digit inference over gRPC beside the same tensor over REST V2 binary, on
one nnserve process, and the bare FastAPI reference beside them, in interleaved rounds.

wrk speaks no HTTP/2, so all three are driven by h2load (nghttp2's load generator): HTTP/1.1
for REST and the reference, h2c for gRPC, with one request in flight per connection as wrk
does. A gRPC call fails with HTTP 200 and a grpc-status trailer, which h2load cannot see: the
server's own count of calls that did not end OK is the error figure. `make bench` prints the
table (its part `grpc`); alone, with short runs:

    BENCH_SECONDS=6 BENCH_ROUNDS=3 PYTHONPATH=tests .venv/bin/python -m bench.grpc_case
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench import servers
from bench.cases import Case, http_cases
from bench.load import ROUND_SECONDS, ROUNDS, Run, median, tool_path, warm
from service.grpc import inference_pb2 as pb

GRPC_CASE = "gRPC digit (raw)"
REST_CASE = "V2 digit (binary)"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Target:
    variant: str
    url: str
    body: bytes = b""
    headers: tuple[str, ...] = ()
    http2: bool = False


def grpc_message(tensor_bytes: bytes) -> bytes:
    """One ModelInfer call on the wire: the gRPC frame (uncompressed, length) and the message,
    the same digit tensor as the REST binary case, raw in and raw out as tritonclient sends."""
    request = pb.ModelInferRequest(model_name="digit")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    request.outputs.add(name="probabilities")
    request.raw_input_contents.append(tensor_bytes)
    message = request.SerializeToString()
    return b"\0" + len(message).to_bytes(4, "big") + message


def targets(
    reference_url: str, rest_url: str, grpc_port: int, rest: Case, header_length: int
) -> list[Target]:
    """The reference, the bench's REST V2 binary case as it is, and its tensor over gRPC."""
    return [
        Target("reference", reference_url + "/"),
        Target(
            REST_CASE,
            rest_url + rest.path,
            rest.body,
            tuple(f"{name}: {value}" for name, value in rest.headers.items()),
        ),
        Target(
            GRPC_CASE,
            f"http://127.0.0.1:{grpc_port}{GRPC_PATH}",
            grpc_message(rest.body[header_length:]),
            ("content-type: application/grpc", "te: trailers"),
            http2=True,
        ),
    ]


def run_h2load(h2load: str, workdir: Path, target: Target, connections: int) -> Run:
    """One run of ROUND_SECONDS; its errors are the HTTP statuses of 300 and above."""
    body, log = workdir / "h2load-body.bin", workdir / "h2load.log"
    log.unlink(missing_ok=True)  # h2load adds to an existing log
    threads = str(min(2, connections))
    command = [h2load, "-c", str(connections), "-t", threads, "-m", "1", "-D", str(ROUND_SECONDS)]
    if target.body:
        body.write_bytes(target.body)
        command += ["-d", str(body)]
    for header in target.headers:
        command += ["-H", header]
    command += ["--log-file", str(log), *([] if target.http2 else ["--h1"]), target.url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", output).group(1))  # type: ignore[union-attr]  # h2load prints it
    rows = np.loadtxt(log, dtype=np.int64, ndmin=2)
    statuses, micros = rows[:, 1], rows[:, 2]
    return Run(
        target.variant,
        connections,
        target.variant,
        rps,
        float(np.percentile(micros, 50)) / 1000,
        float(np.percentile(micros, 99)) / 1000,
        int((statuses >= 300).sum()),
    )


def grpc_calls_not_ok(rest_url: str) -> int:
    """ModelInfer calls the server answered with any status but OK, from its /metrics; the
    calls h2load cancels when a run's time is up (CANCELLED) are no error."""
    metrics = httpx.get(rest_url + "/metrics", timeout=10).text
    pattern = rf'nnserve_requests_total\{{endpoint="{GRPC_PATH}",protocol="grpc",status="(\w+)"\}} (\S+)'
    return sum(
        int(float(count))
        for status, count in re.findall(pattern, metrics)
        if status not in {"OK", "CANCELLED"}
    )


def measure(h2load: str, workdir: Path, targets: list[Target], connections: list[int]) -> list[Run]:
    """Each target in turn, ROUNDS times per connection count; the median of each's rounds."""
    figures = []
    for count in connections:
        measured = [[run_h2load(h2load, workdir, target, count) for target in targets] for _ in range(ROUNDS)]
        figures += [
            median(per_target[0].case, list(per_target)) for per_target in zip(*measured, strict=True)
        ]
    return figures


def table(figures: list[Run], grpc_errors: int) -> list[str]:
    by = {(f.variant, f.connections): f for f in figures}
    http_errors = sum(f.errors for f in figures)
    lines = [
        f"gRPC beside REST V2 binary, digit, one nnserve process, h2load ({http_errors} HTTP errors, "
        f"{grpc_errors} gRPC calls not OK):",
        "",
        "| endpoint | conns | req/s | p50 ms | p99 ms | vs bare FastAPI | vs REST V2 binary |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        reference = by[("reference", f.connections)].rps
        rest = by[(REST_CASE, f.connections)].rps
        name = "constant JSON (bare FastAPI)" if f.variant == "reference" else f.variant
        versus_rest = f"{f.rps / rest:.2f}x" if f.variant == GRPC_CASE else ""
        lines.append(
            f"| {name} | {f.connections} | {f.rps:,.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} | "
            f"{f.rps / reference:.2f}x | {versus_rest} |"
        )
    return lines


def beside_rest(workdir: Path, cases: list[Case], connections: list[int]) -> list[str]:
    """The table of gRPC, REST V2 binary (the bench's case, if among `cases`) and the reference,
    each on a server of its own started here; printed as it is made."""
    rest = next((case for case in cases if case.name == REST_CASE), None)
    if rest is None or rest.header_length is None:
        return []
    reference = servers.reference(workdir, "fastapi_constant")
    served, _ = servers.nnserve(workdir)
    try:
        warm(served.url, [rest])
        chosen = targets(reference.url, served.url, served.grpc_port, rest, rest.header_length)
        figures = measure(tool_path("h2load", "nghttp2-client"), workdir, chosen, connections)
        lines = table(figures, grpc_calls_not_ok(served.url))
    finally:
        served.stop()
        reference.stop()
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    connections = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,32").split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        beside_rest(Path(scratch), http_cases(), connections)


if __name__ == "__main__":
    main()

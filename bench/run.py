"""make bench: nnserve measured against the true ceiling, in one run.

The reference is a bare FastAPI app answering a constant JSON from its own uvicorn process (no
middleware, no access log: bench/reference.py), so a ratio carries none of nnserve's costs; a raw
ASGI app answering the same constant is the floor of the stack. Two `nnserve` processes serve the
committed models (batching on, batching off). For each case and connection count wrk drives the
reference, batching on and batching off back to back, in several rounds (bench/load.py); each
figure is the median of its rounds, ratios taken against the reference runs beside them. Then:
predictions alone and beside explanation traffic (bench/isolation.py), the digit model on the
event loop against the inference thread, both again with two worker processes each, each
endpoint's time split into stages (bench/stages.py), raw onnxruntime in-process, resident memory
after warm-up and the time from start to ready. The tables, the targets met (bench/targets.py),
and bench/results/ for the record (bench/report.py).

Run it as `make bench` (which puts tests/ on the path, for the tests' server launcher). Short
trials: BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS=1,32, BENCH_CASES=<parts of names or
paths, comma-separated>, BENCH_PARTS=<some of main,isolation,hop,workers,worst,shadow,grpc>.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import grpc_case, servers, shadow, worst_case
from bench.cases import REFERENCE, Case, bench_email, http_cases, latest_version
from bench.isolation import explanation_load
from bench.load import Run, Wrk, interleaved, warm
from bench.report import Section, cpu_rows, report, stage_rows
from bench.stages import bookkeeping_us, model_us, normalisation_us, raw_onnxruntime, stage_split
from bench.targets import Target, in_process_targets, isolation_targets, ratio_targets, standing_targets
from bench.tracing_cost import summary, tracing_us
from service.config import Settings

from support.server import Server

# Where make bench finds its cases: a module of cases adds its function here.
CASE_SOURCES: list[Callable[[], list[Case]]] = [http_cases]
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "1,32").split(",")]
# Only the cases whose name or path has one of these (comma-separated), e.g. /explain/,wine
ONLY = os.environ.get("BENCH_CASES", "").split(",")
PARTS = set(os.environ.get("BENCH_PARTS", "main,isolation,hop,workers,worst,shadow,grpc").split(","))


def _find(cases: list[Case], path: str, name: str = "") -> Case | None:
    return next((c for c in cases if c.path == path and c.name.startswith(name)), None)


def _stop(*started: Server) -> None:
    for server in started:
        server.stop()


def main_runs(wrk: Wrk, workdir: Path, cases: list[Case]) -> tuple[list[Run], dict[str, float], float, float]:
    """Every case against the reference, batching on and off; the mean batch sizes formed, the
    resident memory after warm-up and the start-to-ready time of the batching-on server."""
    reference = servers.reference(workdir, "fastapi_constant")
    floor = servers.reference(workdir, "asgi_constant")
    batching_on, start_s = servers.nnserve(workdir)
    batching_off, _ = servers.nnserve(workdir, NNSERVE_BATCHING="false")
    try:
        for server in (batching_on, batching_off):
            warm(server.url, cases)
        rss_mb = servers.rss_mb(batching_on)
        runs: list[Run] = []
        for connections in CONNECTIONS:
            constant = [("reference", reference, REFERENCE), ("floor", floor, REFERENCE)]
            runs += interleaved(wrk, REFERENCE.name, connections, constant)
            for case in cases:
                variants = [
                    ("reference", reference, REFERENCE),
                    ("on", batching_on, case),
                    ("off", batching_off, case),
                ]
                runs += interleaved(wrk, case.name, connections, variants)
        return runs, servers.mean_batch_sizes(batching_on), rss_mb, start_s
    finally:
        _stop(reference, floor, batching_on, batching_off)


def isolation_runs(wrk: Wrk, workdir: Path, cases: list[Case]) -> list[Run]:
    predictions = [
        c for c in (_find(cases, "/predict/wine"), _find(cases, "/predict/digit", "digit (784")) if c
    ]
    explanation = _find(cases, "/explain/digit")
    if not predictions or explanation is None:
        return []
    served, _ = servers.nnserve(workdir)
    try:
        warm(served.url, [*predictions, explanation])
        return explanation_load(wrk, served, predictions, explanation)
    finally:
        served.stop()


def hop_runs(wrk: Wrk, workdir: Path, cases: list[Case]) -> list[Run]:
    """The digit model (about 70 us a call) always on the event loop, always handed to the
    inference thread, and as shipped (on the loop when a request finds it idle, else on the
    thread), batching on in all three, at each connection count."""
    digit = _find(cases, "/predict/digit", "digit (784")
    if digit is None:
        return []
    reference = servers.reference(workdir, "fastapi_constant")
    on_loop, _ = servers.nnserve(workdir, NNSERVE_INLINE_MODEL_US="1000000")
    on_thread, _ = servers.nnserve(
        workdir, NNSERVE_INLINE_MODEL_US="0", NNSERVE_INLINE_WHEN_IDLE_MODEL_US="0"
    )
    shipped, _ = servers.nnserve(workdir)
    started = (on_loop, on_thread, shipped)
    try:
        for server in started:
            warm(server.url, [digit])
        variants = [
            ("reference", reference, REFERENCE),
            ("loop", on_loop, digit),
            ("thread", on_thread, digit),
            ("on", shipped, digit),
        ]
        return [run for c in CONNECTIONS for run in interleaved(wrk, digit.name, c, variants)]
    finally:
        _stop(reference, *started)


def two_workers(wrk: Wrk, workdir: Path, cases: list[Case]) -> list[Run]:
    """nnserve with NNSERVE_WORKERS=2 against the bare app with 2 workers, wine at 32 connections."""
    wine = _find(cases, "/predict/wine")
    if wine is None:
        return []
    served, _ = servers.nnserve(workdir, NNSERVE_WORKERS="2")
    reference = servers.reference(workdir, "fastapi_constant", workers=2)
    try:
        warm(served.url, [wine])
        return interleaved(wrk, wine.name, 32, [("reference", reference, REFERENCE), ("on", served, wine)])
    finally:
        _stop(served, reference)


def worst_case_cpu(workdir: Path) -> None:
    """The worst requests within the service's limits and the server CPU each costs, on a server
    of its own with the default settings; printed (bench/worst_case.py)."""
    served, _ = servers.nnserve(workdir)
    try:
        worst_case.report(served.url, served.process.pid, Settings())
    finally:
        served.stop()


def main() -> None:
    cases = [c for source in CASE_SOURCES for c in source() if any(o in c.name or o in c.path for o in ONLY)]
    runs: list[Run] = []
    batch_sizes: dict[str, float] = {}
    rss_mb = start_s = float("nan")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        wrk = Wrk(workdir)
        if "main" in PARTS:
            runs, batch_sizes, rss_mb, start_s = main_runs(wrk, workdir, cases)
        isolation = isolation_runs(wrk, workdir, cases) if "isolation" in PARTS else []
        hop = hop_runs(wrk, workdir, cases) if "hop" in PARTS else []
        workers = two_workers(wrk, workdir, cases) if "workers" in PARTS else []
        if "worst" in PARTS:
            worst_case_cpu(workdir)
        grpc = grpc_case.beside_rest(workdir, cases, CONNECTIONS) if "grpc" in PARTS else []
        shadowing = shadow.measure(wrk, workdir, cases) if "shadow" in PARTS else []
    stages = {
        case.name: split
        for case in cases
        if case.model
        and (split := stage_split(case.path, case.body, case.header_length, latest_version(case.model)))
        is not None
    }
    raw = raw_onnxruntime(
        {m: latest_version(m) for m in ("wine", "spam", "digit")}, batch_sizes, bench_email()
    )
    bookkeeping = bookkeeping_us() | tracing_us()
    normalisation = normalisation_us(latest_version("digit"))
    digit_model_us = model_us(latest_version("digit"))
    targets: list[Target] = ratio_targets(runs) + isolation_targets(isolation)
    targets += in_process_targets(digit_model_us, normalisation["one at a time"])
    if runs:
        targets += standing_targets(runs, rss_mb, start_s)
    sections: list[Section] = [
        ("runs", "", runs),
        (
            "explanation_isolation",
            "Predictions alone and with 8 clients on /explain/digit (one server, 8 connections):",
            isolation,
        ),
        ("digit_on_loop_or_thread", "The digit model on the event loop or on the inference thread:", hop),
        ("two_workers", "Two worker processes each (NNSERVE_WORKERS=2, uvicorn --workers 2):", workers),
    ]
    notes = [
        *grpc,
        *([""] if grpc else []),
        *cpu_rows(runs, stages),
        *stage_rows(runs, stages),
        "",
        "| raw onnxruntime (in-process, 1 thread) | batch | calls/s | rows/s | us/call |",
        "|---|---|---|---|---|",
        *(
            f"| {r['model']} | {r['batch']} | {r['calls_per_s']:,.0f} | {r['rows_per_s']:,.0f} | "
            f"{r['us_per_call']:.1f} |"
            for r in raw
        ),
        "",
        "Digit normalisation per image, in process: "
        + ", ".join(f"{how} {us:.0f} us" for how, us in normalisation.items()),
        "Mean batch size formed with batching on: "
        + ", ".join(f"{m} {b:.1f}" for m, b in sorted(batch_sizes.items())),
        f"Resident memory after warm-up: {rss_mb:.0f} MB; start to ready: {start_s:.2f} s",
        f"Per request, in process: the request guard {bookkeeping['guard']:.1f} us (deadline, limits, "
        f"id, metrics, access line); every metric update a request and its batch make "
        f"{bookkeeping['metrics']:.1f} us; the access line {bookkeeping['access line']:.1f} us",
        summary(bookkeeping),
        *shadowing,
    ]
    record = {
        "stages_us": stages,
        "raw_onnxruntime": raw,
        "mean_batch_sizes": batch_sizes,
        "rss_mb": rss_mb,
        "start_to_ready_s": start_s,
        "bookkeeping_us": bookkeeping,
        "digit_normalisation_us": normalisation,
        "digit_model_us": digit_model_us,
    }
    report(sections, notes, targets, record)


if __name__ == "__main__":
    main()

"""make bench's tables, its list of targets met or not, and bench/results/ for the record."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cases import REFERENCE, REPO
from bench.load import ROUNDS, SECONDS, Run
from bench.stages import STAGES
from bench.targets import Target

RESULTS = Path(os.environ.get("BENCH_RESULTS", REPO / "bench" / "results"))  # elsewhere for trial runs
SERVERS = {
    "reference": "bare FastAPI, constant",
    "floor": "raw ASGI, constant",
    "on": "nnserve",
    "off": "nnserve, batching off",
    "quiet": "nnserve, alone",
    "explained": "nnserve, 8 clients explaining",
    "loop": "nnserve, model on the event loop",
    "thread": "nnserve, model on the inference thread",
}


def table(runs: list[Run]) -> list[str]:
    reference = {(r.case, r.connections): r for r in runs if r.variant == "reference"}
    lines = [
        "| endpoint | conns | server | req/s | p50 ms | p99 ms | vs bare FastAPI |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        beside = reference.get((r.case, r.connections))
        ratio = f"{r.rps / beside.rps:.2f}x" if beside else "-"
        # The reference once per connection count: its own row, or the one run beside an endpoint.
        own_row = r.case == REFERENCE.name or (REFERENCE.name, r.connections) not in reference
        if r.variant != "reference" or own_row:
            shown = REFERENCE.name if r.variant == "reference" else r.case
            lines.append(
                f"| {shown} | {r.connections} | {SERVERS[r.variant]} | {r.rps:,.0f} | {r.p50_ms:.2f} | "
                f"{r.p99_ms:.2f} | {ratio} |"
            )
    return lines


def stage_rows(runs: list[Run], stages: dict[str, dict[str, float]]) -> list[str]:
    """Each endpoint's p50 at 1 connection, split: the bare app's own p50 (server stack, loopback
    and wrk), the request's stages, and what remains (nnserve's own layers)."""
    by = {(r.case, r.connections, r.variant): r for r in runs}
    rows = [
        "| endpoint (1 connection, p50) | bare app us | "
        + " | ".join(f"{s} us" for s in STAGES)
        + " | nnserve layers us | total us |",
        "|---|---|" + "---|" * len(STAGES) + "---|---|",
    ]
    for name, split in stages.items():
        if (name, 1, "on") not in by:
            continue
        total = by[(name, 1, "on")].p50_ms * 1000
        bare = by[(name, 1, "reference")].p50_ms * 1000
        layers = total - bare - sum(split.values())
        rows.append(
            f"| {name} | {bare:.0f} | "
            + " | ".join(f"{split[s]:.0f}" for s in STAGES)
            + f" | {layers:.0f} | {total:.0f} |"
        )
    return rows


STAGE_NAMES = {"parse": "parse", "preprocess": "features", "model": "model", "response": "respond"}


def cpu_rows(runs: list[Run], stages: dict[str, dict[str, float]]) -> list[str]:
    """Each endpoint's server CPU per request at the bench's most connections (nnserve,
    batching on), split: the framework (what the bare FastAPI app's server spent a request in
    the same rounds: uvicorn, HTTP, routing, a JSON answer), the request's own stages timed in
    process (parse, features, the model at batch 1, respond), and the remainder: the queue
    hand-over to the model and back, and nnserve's own layers (guard, metrics, access line)."""
    if not runs:
        return []
    connections = max(r.connections for r in runs)
    by = {(r.case, r.connections, r.variant): r for r in runs}
    rows = [
        f"Server CPU per request at {connections} connections, us (nnserve batching on; stages in process):",
        "",
        "| endpoint | server CPU | framework (bare FastAPI) | "
        + " | ".join(STAGE_NAMES[s] for s in STAGES)
        + " | queue hand-over and the rest |",
        "|---|---|---|" + "---|" * len(STAGES) + "---|",
    ]
    for name, split in stages.items():
        if (name, connections, "on") not in by:
            continue
        total = by[(name, connections, "on")].cpu_us
        framework = by[(name, connections, "reference")].cpu_us
        rest = total - framework - sum(split.values())
        rows.append(
            f"| {name} | {total:.0f} | {framework:.0f} | "
            + " | ".join(f"{split[s]:.0f}" for s in STAGES)
            + f" | {rest:.0f} |"
        )
    return [*rows, ""]


Section = tuple[str, str, list[Run]]  # (key in the results file, heading, runs)


def report(sections: list[Section], notes: list[str], targets: list[Target], record: dict[str, Any]) -> None:
    """Prints every table and target, and writes the run to bench/results/ (latest.json too).
    `notes`: lines (other tables among them) printed before the targets."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    load = os.getloadavg()[0]
    lines = [
        f"nnserve bench: wrk, {SECONDS} s per figure ({ROUNDS} interleaved rounds, medians), one server "
        f"process each, wrk on the same cores; {machine}; load average {load:.1f} at the end",
    ]
    for _, heading, runs in sections:
        if runs:
            lines += ["", heading, "", *table(runs)] if heading else ["", *table(runs)]
    lines += ["", *notes, "", "Targets:"]
    lines += [f"- [{'x' if met else ' '}] {name}: {value}" for name, met, value in targets]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "created": stamp,
        "machine": machine,
        "load_average": load,
        "seconds_per_figure": SECONDS,
        "rounds": ROUNDS,
        **{key: [asdict(r) for r in runs] for key, _, runs in sections},
        **record,
        "targets": [{"target": n, "met": m, "value": v} for n, m, v in targets],
        "table": text,
    }
    for path in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {RESULTS / (stamp + '.json')}")

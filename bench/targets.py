"""The targets make bench checks, each printed with its figure and met or not: issue 32's
(ratios and p99 against the separate bare FastAPI process at 32 connections, medians of
interleaved rounds; the digit model and normalisation in process; the explanation isolation
case) and the earlier rounds' that still hold (memory, start-up, batching, explanation latency)."""

from __future__ import annotations

from bench.cases import SHORT_SPAM_CASE
from bench.isolation import CONNECTIONS as ISOLATION_CONNECTIONS
from bench.load import Run

Target = tuple[str, bool, str]  # (what, met, the figure)

# Issue 32: the case's name begins with the key; req/s ratio floor, p99 ratio ceiling (or None).
RATIO_TARGETS: tuple[tuple[str, float | None, float | None], ...] = (
    ("wine", 1.0, None),
    (SHORT_SPAM_CASE, 0.8, None),
    ("digit (784", 0.5, 2.5),
    ("V2 digit (binary", 0.7, None),
)
ISOLATION_P99 = 1.5  # predictions' p99 with 8 clients on /explain/digit, over their p99 without
EXPLAIN_P50_MS = 5.0  # an explanation at 1 connection (issue 15)
RSS_MB_TARGET, START_S_TARGET = 142, 0.75  # no worse than before issue 32
DIGIT_MODEL_US = 35.0  # the default digit version, batch 1, one thread, in process
NORMALISATION_US = 20.0  # a 28x28 pixel digit, one at a time, in process


def _by(runs: list[Run]) -> dict[tuple[str, int, str], Run]:
    return {(r.case, r.connections, r.variant): r for r in runs}


def ratio_targets(runs: list[Run]) -> list[Target]:
    by = _by(runs)
    names = sorted({r.case for r in runs if r.variant == "on"})
    targets = []
    for key, floor, p99_ceiling in RATIO_TARGETS:
        name = next((n for n in names if n.startswith(key)), "")
        if (name, 32, "on") not in by:
            continue
        served, reference = by[(name, 32, "on")], by[(name, 32, "reference")]
        if floor is not None:
            ratio = served.rps / reference.rps
            targets.append(
                (
                    f"{name} >= {floor}x the bare FastAPI app at 32 connections",
                    ratio >= floor,
                    f"{ratio:.2f}x",
                )
            )
        if p99_ceiling is not None:
            over = served.p99_ms / reference.p99_ms
            targets.append(
                (
                    f"{name} p99 <= {p99_ceiling}x the bare app's at 32 connections",
                    over <= p99_ceiling,
                    f"{over:.2f}x",
                )
            )
    return targets


def isolation_targets(runs: list[Run]) -> list[Target]:
    by = _by(runs)
    targets = []
    for name in sorted({r.case for r in runs}):
        quiet, explained = (name, ISOLATION_CONNECTIONS, "quiet"), (name, ISOLATION_CONNECTIONS, "explained")
        if quiet in by and explained in by:
            over = by[explained].p99_ms / by[quiet].p99_ms
            targets.append(
                (
                    f"{name} p99 at {ISOLATION_CONNECTIONS} connections with 8 clients on /explain/digit "
                    f"<= {ISOLATION_P99}x its p99 without",
                    over <= ISOLATION_P99,
                    f"{over:.2f}x",
                )
            )
    return targets


def standing_targets(runs: list[Run], rss_mb: float, start_s: float) -> list[Target]:
    """Earlier rounds' targets: batching never slower, explanations fast, memory and start-up."""
    by = _by(runs)
    names = sorted({r.case for r in runs if r.variant == "on"})
    targets = []
    if any(r.connections == 32 for r in runs):
        slower = [n for n in names if by[(n, 32, "on")].rps < by[(n, 32, "off")].rps * 0.98]
        targets.append(
            (
                "batching on no slower than off at 32 connections",
                not slower,
                f"slower: {slower}" if slower else "all",
            )
        )
    wine = next((n for n in names if n.startswith("wine")), "")
    if (wine, 1, "on") in by:
        gap = by[(wine, 1, "on")].p50_ms - by[(wine, 1, "reference")].p50_ms
        targets.append(
            ("wine p50 at 1 connection within 0.15 ms of the bare app's", gap <= 0.15, f"{gap:+.2f} ms")
        )
    explained = {n: by[(n, 1, "on")].p50_ms for n in names if n.startswith("explain") and (n, 1, "on") in by}
    if explained:
        targets.append(
            (
                f"explanations at 1 connection: p50 <= {EXPLAIN_P50_MS:g} ms",
                max(explained.values()) <= EXPLAIN_P50_MS,
                ", ".join(f"{n} {ms:.2f} ms" for n, ms in explained.items()),
            )
        )
    targets.append(
        (
            f"resident memory with all models <= {RSS_MB_TARGET} MB",
            rss_mb <= RSS_MB_TARGET,
            f"{rss_mb:.0f} MB",
        )
    )
    targets.append((f"start to ready <= {START_S_TARGET} s", start_s <= START_S_TARGET, f"{start_s:.2f} s"))
    return targets


def in_process_targets(model_us: float, normalisation_us: float) -> list[Target]:
    """The work itself (issue 32): the default digit version's call and a pixel digit's
    normalisation, each in this thread's CPU."""
    return [
        (
            f"digit model <= {DIGIT_MODEL_US:g} us a row (batch 1, one thread)",
            model_us <= DIGIT_MODEL_US,
            f"{model_us:.1f} us",
        ),
        (
            f"normalisation of a 28x28 pixel digit <= {NORMALISATION_US:g} us",
            normalisation_us <= NORMALISATION_US,
            f"{normalisation_us:.1f} us",
        ),
    ]

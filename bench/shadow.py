"""What a shadow version costs the client: /predict/spam at one connection on two servers, one
plain and one with NNSERVE_SHADOW (the previous spam version beside the serving one), measured
back to back in interleaved rounds as make bench measures everything. The target: the shadowed
server's p50 within 10% of the plain one's.

Part of `make bench`; alone: `python -m bench.shadow` (BENCH_SECONDS, BENCH_ROUNDS as for make bench).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import run

P50_TARGET = 1.10


def measure(wrk: str, lua: Path, workdir: Path) -> list[str]:
    """The comparison's lines, printed as well; none if the bench's cases leave spam out."""
    case = next((c for c in run.build_cases() if c.name == run.SHORT_SPAM_CASE), None)
    versions = sorted(int(p.name) for p in (run.MODELS / "spam").iterdir() if p.name.isdigit())
    if case is None or len(versions) < 2:
        return []
    shadow = f"spam:{versions[-2]}"
    plain = run.Service.nnserve(workdir, NNSERVE_LOG_LEVEL="warning")
    shadowed = run.Service.nnserve(workdir, NNSERVE_LOG_LEVEL="warning", NNSERVE_SHADOW=shadow)
    try:
        run._warm(plain, [case])
        run._warm(shadowed, [case])
        variants = [("no shadow", plain, case), (f"shadow {shadow}", shadowed, case)]
        off, on = run._interleaved(wrk, lua, workdir, case.name, 1, variants)
    finally:
        plain.stop()
        shadowed.stop()
    ratio = on.p50_ms / off.p50_ms
    lines = [
        f"Shadow ({shadow} beside the serving spam), {case.name}, 1 connection: p50 {off.p50_ms:.3f} -> "
        f"{on.p50_ms:.3f} ms ({ratio:.2f}x), p99 {off.p99_ms:.3f} -> {on.p99_ms:.3f} ms, "
        f"{off.rps:.0f} -> {on.rps:.0f} req/s",
        f"- [{'x' if ratio <= P50_TARGET else ' '}] shadow p50 within {P50_TARGET - 1:.0%} of no shadow: "
        f"{ratio:.2f}x",
    ]
    print("\n".join(lines), flush=True)
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        lua = workdir / "bench.lua"
        lua.write_text(run.LUA)
        measure(run.wrk_path(), lua, workdir)


if __name__ == "__main__":
    main()

"""Stalled keyless uploads against keyed inference (issue 30, finding 1): a server with a
prediction key, BENCH_STALLED connections without a key each declaring a 1 MiB body on `POST /nope`
and never sending it, and keyed /predict/wine asked every 0.1 s beside them for BENCH_SECONDS.
Prints how many keyed requests were refused, when the first one was answered 200, and what
the stalled connections were answered.

    PYTHONPATH=tests python -m bench.stalled_uploads    # BENCH_STALLED=16 BENCH_SECONDS=10 by default
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from support.server import launch
from support.stalled import answer_status, probe_wine, stalled_uploads

KEY = "bench-key"


def main() -> None:
    count = int(os.environ.get("BENCH_STALLED", "16"))
    seconds = float(os.environ.get("BENCH_SECONDS", "10"))
    with tempfile.TemporaryDirectory() as workdir:
        server = launch(Path(workdir), NNSERVE_API_KEYS=KEY)
        try:
            with stalled_uploads(server.port, count) as sockets:
                time.sleep(0.2)  # the heads have arrived
                probe = probe_wine(server.url, KEY, seconds)
                statuses = [answer_status(sock, timeout=0.1) for sock in sockets]
        finally:
            server.stop()
    first = "never" if probe.first_200 is None else f"after {probe.first_200:.2f} s"
    refused = [at for at, status in probe.answers if status != 200]
    last = f", the last at {refused[-1]:.2f} s" if refused else ""
    print(
        f"{count} stalled keyless uploads: keyed /predict/wine refused {probe.refused} of "
        f"{len(probe.answers)} times in {seconds:.0f} s{last} (statuses "
        f"{sorted({status for _, status in probe.answers})}); first 200 {first}; "
        f"the stalled connections were answered {statuses}"
    )


if __name__ == "__main__":
    main()

"""The `nnserve` console script: what `make serve`, the tests and the container all run."""

from __future__ import annotations

import signal
import sys

import uvicorn

from service.config import Settings


def main() -> None:
    settings = Settings()
    # uvicorn drains in-flight requests on SIGTERM, then raises the signal again with the
    # original handler in place; ours makes that a clean exit 0, as orchestrators expect.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


if __name__ == "__main__":
    main()

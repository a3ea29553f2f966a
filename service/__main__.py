"""The `nnserve` console script: what `make serve`, the tests and the container all run."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess

from service.admission.drain import DrainingServer
from service.config import METRICS_DIR_ENV, Settings
from service.http.wire import OneWriteHttpProtocol, ServerConfig

APP = "service.app:create_app"
STARTUP_FAILURE = 3  # uvicorn's exit code when the app cannot start


@contextmanager
def _metrics_directory() -> Iterator[None]:
    """A fresh directory for the workers' metric files (service/observability/metrics.py), in the environment
    the workers inherit, removed with everything in it once they are gone."""
    path = tempfile.mkdtemp(prefix="nnserve-metrics-")
    os.environ[METRICS_DIR_ENV] = path
    try:
        yield
    finally:
        del os.environ[METRICS_DIR_ENV]
        shutil.rmtree(path, ignore_errors=True)


def _config(settings: Settings) -> uvicorn.Config:
    return ServerConfig(
        APP,
        head_timeout_seconds=settings.header_timeout_seconds,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=OneWriteHttpProtocol,
        log_config=None,
        access_log=False,
        # Nothing reads the client's address, so the layer that rewrites it from
        # X-Forwarded-For on every request is left out; no header names the server software.
        proxy_headers=False,
        server_header=False,
        # The drain comes out of the grace, so the exit still comes within it (uvicorn takes any
        # number of seconds, though it declares an int).
        timeout_graceful_shutdown=settings.shutdown_grace_seconds - settings.drain_seconds,
    )


def _ignore_stop_signals() -> None:
    """From here on a SIGTERM or SIGINT has nothing left to stop: ignored, through the
    interpreter's own exit too (which would otherwise restore the default handlers, and the
    process would die of a late signal instead of exiting 0, as orchestrators expect)."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)


def _exit_0(signum: int, frame: FrameType | None) -> None:
    """A stop signal outside the server's own handling (before it starts serving, or once it
    has stopped): a clean exit 0."""
    _ignore_stop_signals()
    sys.exit(0)


def main() -> None:
    settings = Settings()
    signal.signal(signal.SIGTERM, _exit_0)
    signal.signal(signal.SIGINT, _exit_0)
    config = _config(settings)
    if settings.workers > 1:
        # uvicorn's supervisor stops its workers at once on SIGTERM: no drain; metrics are shared.
        with _metrics_directory():
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = DrainingServer(config, settings.drain_seconds)
    server.run()
    _ignore_stop_signals()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()

"""The fixtures every test module shares. Contract tests get `client`: the app built by
create_app() on the committed models, spoken to in process through an httpx client (no socket,
no process), so the inner ring of the suite runs in seconds. Tests of what needs a real process
(start-up, shutdown, overload, reload, load balancer, browser, soak) use `start_server` or
`server`, which run the `nnserve` console script under uvicorn on a free port (tests/support)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.config import Settings

from support import slow_model
from support.browser import chromium
from support.inprocess import MakeClient, in_process_client
from support.server import MODELS_DIR, Server, StartServer, launch
from support.slow_model import SlowModels

# Apps built in this process serve no gRPC (real servers get a port of their own from
# support/server.py): tritonclient.grpc, which tests import, defines the protocol's messages in
# protobuf's pool, and the service's own definitions would be refused beside them.
os.environ["NNSERVE_GRPC_PORT"] = "0"

NEEDS = {"server": "process", "start_server": "process", "browser": "browser"}
"""Fixtures that make a test need something more than the process it runs in: the marker each
adds, so that a test's tier follows from what it uses instead of a mark someone must remember."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in NEEDS:
                item.add_marker(NEEDS[fixture])


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """A factory: start_server(NNSERVE_X="..", wait_ready=True) -> Server. Every server it
    starts is stopped at the end of the session. `executable` and `cwd` start another install
    of the console script (the deployment tests' fresh virtual environment)."""
    started: list[Server] = []

    def start(**options: Any) -> Server:
        server = launch(tmp_path_factory.mktemp("server"), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def slow_models(tmp_path_factory: pytest.TempPathFactory) -> SlowModels:
    """A factory: slow_models(milliseconds, name="wine") -> a models folder whose `name` model
    takes about that long per call (tests/support/slow_model.py), made once per kind."""
    made: dict[tuple[float, str], Path] = {}

    def make(milliseconds: float, name: str = "wine") -> Path:
        if (milliseconds, name) not in made:
            folder = tmp_path_factory.mktemp("slow")
            made[milliseconds, name] = slow_model.slow_models(folder, milliseconds, name)
        return made[milliseconds, name]

    return make


@pytest.fixture(scope="session")
def server(start_server: StartServer) -> Server:
    """The service on the committed models with default settings, in its own process."""
    return start_server()


def _app(**settings: Any) -> FastAPI:
    return create_app(Settings(**{"models_dir": MODELS_DIR, "log_level": "warning", **settings}))


@pytest.fixture(scope="session")
def client() -> Iterator[httpx.Client]:
    """The service on the committed models with default settings, in process: the app's
    lifespan runs (models load and warm up), requests go through every middleware."""
    with in_process_client(_app()) as http:
        yield http


@pytest.fixture(scope="module")
def make_client() -> Iterator[MakeClient]:
    """A factory: make_client(api_keys=["k"], max_batch_size=4, ...) -> an in-process client of
    an app built with those settings (Settings field names); each is closed with the module."""
    with ExitStack() as stack:

        def make(**settings: Any) -> httpx.Client:
            return stack.enter_context(in_process_client(_app(**settings)))

        yield make


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium (playwright's Browser) for one module's tests: Playwright's sync
    API runs an event loop in this thread while it is open, and later tests call asyncio.run()."""
    with chromium() as launched:
        yield launched

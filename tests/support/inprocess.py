"""The app in this process, behind a synchronous httpx client: httpx's ASGI transport runs each
request on an event loop in a background thread, where the app's lifespan (model loading,
executor) was entered too, so requests see exactly what a served app does, minus the socket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from service.config import Settings
from service.models.loading import ModelVersion, load_version
from service.models.runner import ModelRunner

MakeClient = Callable[..., httpx.Client]


class _PortalTransport(httpx.BaseTransport):
    def __init__(self, portal: BlockingPortal, app: FastAPI) -> None:
        self._portal = portal
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # A body that is a plain bytes stream reads both ways; the ASGI transport reads it async.
        request = httpx.Request(request.method, request.url, headers=request.headers, content=request.read())

        async def send() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self._portal.call(send)


@contextmanager
def in_process_client(app: FastAPI, base_url: str = "http://nnserve.test") -> Iterator[httpx.Client]:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        with httpx.Client(transport=_PortalTransport(portal, app), base_url=base_url, timeout=30) as client:
            yield client


@contextmanager
def loaded_version(name: str, version: int, folder: Path) -> Iterator[ModelVersion]:
    """One model version loaded as the service loads it, with the default limits and its runner
    on a thread of its own (open while the block runs): for tests of the loader itself."""
    settings = Settings()
    with ThreadPoolExecutor(1) as executor:
        yield load_version(
            name,
            version,
            folder,
            intra_op_threads=1,
            make_runner=lambda session, _, __: ModelRunner(session, executor, max_batch_rows=8),
            max_model_bytes=settings.max_model_bytes,
            max_warm_up_bytes=settings.max_warm_up_bytes,
        )

"""create_app(settings): the FastAPI application, its lifespan and its layers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import ORJSONResponse

from service import __version__
from service.config import Settings
from service.errors import install_error_handlers
from service.logs import configure_logging
from service.middleware import RequestGuard
from service.registry import ModelRepository
from service.routes import ops, predict


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        registry = ModelRepository(
            settings.models_dir,
            executor,
            intra_op_threads=settings.intra_op_threads,
            max_batch_rows=settings.max_batch_size,
            batching=settings.batching,
        )
        registry.load_all()
        app.state.registry = registry
        try:
            yield
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="nnserve",
        version=__version__,
        description="Serves three small neural networks: wine, spam and digit.",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(ops.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    return app

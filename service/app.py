"""create_app(settings): the FastAPI application, its lifespan and its layers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, ORJSONResponse
from fastapi.staticfiles import StaticFiles
from onnxruntime import InferenceSession

from service import __version__
from service.body import install_body_schemas
from service.config import Settings
from service.errors import install_error_handlers
from service.logs import configure_logging
from service.metrics import Metrics
from service.middleware import RequestGuard
from service.registry import ModelRepository
from service.routes import ops, predict, v2
from service.runner import ModelRunner

WEB_DIR = Path(__file__).parent / "web"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)

    metrics = Metrics.create()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")

        def make_runner(session: InferenceSession, name: str, version: int) -> ModelRunner:
            return ModelRunner(
                session,
                executor,
                max_batch_rows=settings.max_batch_size,
                batching=settings.batching,
                timeout=settings.inference_timeout_seconds,
                test_delay=settings.test_inference_delay_ms / 1000,
                observer=metrics.observer(name, version),
            )

        registry = ModelRepository(
            settings.models_dir,
            intra_op_threads=settings.intra_op_threads,
            make_runner=make_runner,
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
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    metrics.watch_models(lambda: _model_states(app))
    install_error_handlers(app)
    install_body_schemas(app)
    app.include_router(predict.router)
    app.include_router(ops.router)
    app.include_router(v2.router)
    app.include_router(v2.repository)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if settings.bench_routes:
        app.include_router(ops.bench_router)

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        """The demo page: plain HTML, CSS and JS calling the public API."""
        return FileResponse(WEB_DIR / "index.html")

    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight,
        retry_after_seconds=settings.retry_after_seconds,
        metrics=metrics,
    )
    if settings.cors_origins:  # outermost, so the guard's own 413 and 503 carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app


def _model_states(app: FastAPI) -> dict[tuple[str, int], bool]:
    registry: ModelRepository | None = getattr(app.state, "registry", None)
    if registry is None:
        return {}
    return {
        (entry.name, number): version.ready
        for entry in registry.models.values()
        for number, version in entry.versions.items()
    }

"""create_app(settings): the FastAPI application, its lifespan and its layers."""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from onnxruntime import InferenceSession
from starlette.types import ASGIApp

from service import __version__
from service.config import Settings
from service.config.traffic import TrafficError
from service.dataplane import DataPlane
from service.http.auth import document_api_keys
from service.http.body import install_body_schemas
from service.http.docs import install_docs
from service.http.errors import install_error_handlers
from service.http.guard import RequestGuard
from service.http.hotpath import HotPath
from service.http.routes import explain, ops, predict, v2
from service.models import traffic
from service.models.loading import MakeRunner
from service.models.repository import ModelRepository
from service.models.runner import ModelRunner
from service.nnserve import NNServe
from service.observability import exporters
from service.observability.logs import configure_logging
from service.observability.metrics import Metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from service.grpc.server import GrpcServer

WEB_DIR = Path(__file__).parent / "web"
log = logging.getLogger("nnserve")


def lower_priority(nice: int) -> None:
    """Makes the calling thread `nice` (Linux schedules threads by their own niceness): an
    explanation's dozens of network rows then take only the CPU that predictions leave."""
    thread = threading.get_native_id()
    if nice > os.getpriority(os.PRIO_PROCESS, thread):  # only ever lower: raising needs privilege
        os.setpriority(os.PRIO_PROCESS, thread, nice)


def create_app(settings: Settings | None = None, *, span_exporter: SpanExporter | None = None) -> NNServe:
    """`span_exporter`: traces go there, whatever the OTEL_* variables say (the tests' in-memory
    exporter); without it they say whether traces are on (service/observability/tracing.py)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)

    metrics = Metrics.create()
    tracer = exporters.from_environment(metrics.spans_dropped.inc, exporter=span_exporter)

    @asynccontextmanager
    async def lifespan(app: NNServe) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        explaining = ThreadPoolExecutor(
            settings.explain_threads,
            thread_name_prefix="explain",
            initializer=lower_priority,
            initargs=(settings.explain_nice,),
        )

        def runner(executor: Executor, max_queued_rows: int, on_loop: bool) -> MakeRunner:
            """Runners of sessions on `executor`; `on_loop`: small models may run on the event
            loop instead (service/models/runner.py), which explanations never do: their dozens of rows
            would stall every request."""

            loop_below = (settings.inline_model_us / 1e6, settings.inline_when_idle_model_us / 1e6)
            inline, inline_when_idle = loop_below if on_loop else (0.0, 0.0)

            def make(session: InferenceSession, name: str, version: int) -> ModelRunner:
                return ModelRunner(
                    session,
                    executor,
                    max_batch_rows=settings.max_batch_size,
                    max_queued_rows=max_queued_rows,
                    batching=settings.batching,
                    timeout=settings.inference_timeout_seconds,
                    max_output_bytes=settings.max_output_bytes,
                    observer=metrics.observer(name, version),
                    inline_below_seconds=settings.inline_model_us / 1e6 if on_loop else 0.0,
                    inline_when_idle_below_seconds=settings.inline_when_idle_model_us / 1e6
                    if on_loop
                    else 0.0,
                )

            return make

        make_runner = runner(executor, settings.max_queued_rows, on_loop=True)
        make_explainer = runner(explaining, settings.explain_max_queued_rows, on_loop=False)

        repository = ModelRepository(
            settings.models_dir,
            intra_op_threads=settings.intra_op_threads,
            make_runner=make_runner,
            make_explainer=make_explainer,
            max_model_bytes=settings.max_model_bytes,
            max_warm_up_bytes=settings.max_warm_up_bytes,
        )
        repository.load_all()
        # Everything loaded so far (cards, vocabularies, sessions) lives as long as the process:
        # out of the cyclic collector's sight, a full collection no longer walks it, which was
        # a pause of tens of milliseconds in the middle of requests (the p99).
        gc.collect()
        gc.freeze()
        try:
            app.dataplane = DataPlane(
                repository,
                metrics.traffic,
                strict_readiness=settings.strict_readiness,
                traffic=traffic.policy(settings.traffic, settings.shadow),
                shadow_queue_bytes=settings.shadow_queue_bytes,
                shadow_log_per_minute=settings.shadow_log_per_minute,
            )
        except TrafficError as exc:
            log.error("refusing to start: NNSERVE_TRAFFIC / NNSERVE_SHADOW: %s", exc)
            executor.shutdown(wait=False, cancel_futures=True)
            explaining.shutdown(wait=False, cancel_futures=True)
            raise
        grpc_server = await _start_grpc(app) if settings.grpc_port else None
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await app.dataplane.close()
            executor.shutdown(wait=True, cancel_futures=True)
            explaining.shutdown(wait=True, cancel_futures=True)
            if tracer is not None:
                tracer.shutdown()

    app = NNServe(
        settings,
        metrics,
        title="nnserve",
        version=__version__,
        description="Serves three small neural networks: wine, spam and digit.",
        lifespan=lifespan,
        docs_url=None,  # service/http/docs.py serves /docs and /redoc from its own files
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.tracer = tracer
    metrics.watch_models(lambda: _model_states(app))
    install_error_handlers(app, settings)
    install_body_schemas(app)
    install_docs(app)
    document_api_keys(app, settings)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(ops.router)
    app.include_router(v2.router)
    app.include_router(v2.repository)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        """The demo page: plain HTML, CSS and JS calling the public API."""
        return FileResponse(WEB_DIR / "index.html")

    def front(inner: ASGIApp) -> ASGIApp:
        """The layers every request meets before FastAPI's own stack (its server-error,
        telemetry and body-limit middleware, which the guard and the hot path do without)."""
        app_: ASGIApp = HotPath(inner, routers=[predict.router, explain.router, v2.router], fastapi=app)
        app_ = RequestGuard(app_, settings=settings, metrics=metrics, admission=app.admission, tracer=tracer)
        if settings.cors_origins:  # outermost, so the guard's own 413 and 503 carry CORS headers too
            app_ = CORSMiddleware(
                app_,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Content-Type",
                    "Authorization",
                    "X-Request-ID",
                    "X-Request-Timeout",
                    "X-Traffic-Key",
                ],
                expose_headers=["X-Request-ID", "Retry-After"],
            )
        return app_

    app.front = front
    return app


async def _start_grpc(app: NNServe) -> GrpcServer:
    """The gRPC server beside the REST app. Imported here, when NNSERVE_GRPC_PORT asks for it:
    with gRPC off, neither grpc nor the protocol's messages are loaded (service/grpc/__init__.py
    says why that matters to the tests)."""
    from service.grpc.server import GrpcServer

    server = GrpcServer(app)
    await server.start()
    return server


def _model_states(app: NNServe) -> dict[tuple[str, int], bool]:
    if not app.started:
        return {}
    return {(v.name, v.version): v.ready for v in app.dataplane.versions()}

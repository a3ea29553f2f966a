"""The gRPC server: grpc.aio on the REST app's own event loop, started by the app's lifespan once
the models are loaded and stopped (in-flight calls finished) when it ends. Beside the inference
service: the standard grpc.health.v1 service (SERVING while the server is ready, NOT_SERVING
once it drains, for Kubernetes' gRPC probes and balancers) and server reflection (grpcurl)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.admission.drain import draining
from service.grpc import inference_pb2
from service.grpc.guard import Guard
from service.grpc.inference_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from service.grpc.servicer import InferenceServicer
from service.nnserve import NNServe

log = logging.getLogger("nnserve")

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_PERIOD_SECONDS = 0.1  # as often as uvicorn looks for its own exit


class GrpcServer:
    def __init__(self, app: NNServe) -> None:
        settings = app.settings
        self.app = app
        self.health = health.aio.HealthServicer()
        self.server = aio.server(
            interceptors=[Guard(app)],
            options=[
                # The limit of a REST body is the limit of a message: beyond it grpc refuses the
                # call with RESOURCE_EXHAUSTED before reading it.
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                # What one connection can make the server hold (issue 30): its calls open at once,
                # and the bytes each may send before the guard reads them. Bandwidth probing would
                # grow that window to hundreds of MB per call. The limit is plain HTTP/2's, which
                # a client honours by queueing its calls: grpc's "overload protection" resets a
                # burst's streams instead (UNAVAILABLE that nnserve never sees).
                ("grpc.max_concurrent_streams", settings.grpc_max_streams),
                ("grpc.http.overload_protection", 0),
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", settings.grpc_window_bytes),
                ("grpc.max_connection_idle_ms", int(settings.grpc_idle_seconds * 1000)),
                ("grpc.max_connection_age_ms", int(settings.grpc_connection_age_seconds * 1000)),
                ("grpc.max_connection_age_grace_ms", int(settings.inference_timeout_seconds * 1000)),
                # Several workers share the port, as they share the REST socket; one process
                # alone fails to start when the port is taken rather than share it unseen.
                ("grpc.so_reuseport", int(settings.workers > 1)),
            ],
        )
        add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), self.server)  # type: ignore[no-untyped-call]  # generated
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.port = self.server.add_insecure_port(f"{host}:{settings.grpc_port}")
        # On SIGTERM, time for the calls in flight once the drain is over.
        self.grace_seconds = settings.shutdown_grace_seconds - settings.drain_seconds
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        log.info("gRPC inference service on port %d", self.port)
        self._watch = asyncio.create_task(self._follow_readiness_and_drain())

    async def stop(self) -> None:
        """At the app's end: no new calls, and those in flight get the rest of the grace."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_seconds)

    async def _follow_readiness_and_drain(self) -> None:
        """Keeps the health status to readiness: NOT_SERVING while a model is not ready and from
        the moment SIGTERM starts the drain (service/admission/drain.py), so that probes and balancers turn
        away first. As REST's socket does, the port then closes after NNSERVE_DRAIN_SECONDS
        (calls in flight finish within the grace), even while REST requests still hold the app."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        current = None
        while not draining.is_set():
            status = serving if self.app.dataplane.ready() else not_serving
            if status != current:
                for name in ("", SERVICE_NAME):
                    await self.health.set(name, status)
                current = status
            await asyncio.sleep(HEALTH_PERIOD_SECONDS)
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.app.settings.drain_seconds)
        await self.server.stop(self.grace_seconds)

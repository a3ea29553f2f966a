"""NNServe: the application object, typed. Handlers reach the settings, the metrics and the
data plane through `NNServe.of(request)` instead of the untyped `app.state`, so a renamed
attribute is a type error rather than an AttributeError in the middle of a request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp

from service.admission.budgets import Admission
from service.config import Settings
from service.dataplane import DataPlane
from service.observability.metrics import Metrics
from service.observability.tracing import Tracer


class NNServe(FastAPI):
    """FastAPI with typed `settings`, `metrics` and `dataplane`, and with `front`: layers put
    ahead of FastAPI's own middleware stack rather than inside it, so inference requests are
    guarded and answered by the hot path without passing through FastAPI's error, telemetry and
    body-limit layers, which they have no use for (the guard limits bodies, and the hot path
    turns any exception into the app's error answer)."""

    front: Callable[[ASGIApp], ASGIApp] | None = None
    tracer: Tracer | None = None  # None: traces are off (service/observability/tracing.py)

    def __init__(self, settings: Settings, metrics: Metrics, **fastapi_options: Any) -> None:
        super().__init__(**fastapi_options)
        self.settings = settings
        self.metrics = metrics
        # One budget of work in flight for the whole process, whichever protocol brings it.
        self.admission = Admission(settings)
        self._dataplane: DataPlane | None = None

    @staticmethod
    def of(connection: HTTPConnection) -> NNServe:
        app: NNServe = connection.app
        return app

    @property
    def dataplane(self) -> DataPlane:
        """The models, once the lifespan has loaded them."""
        if self._dataplane is None:
            raise RuntimeError("the models are not loaded: the app's lifespan has not started")
        return self._dataplane

    @dataplane.setter
    def dataplane(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    @property
    def started(self) -> bool:
        return self._dataplane is not None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return self.front(stack) if self.front else stack

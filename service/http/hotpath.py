"""The hot path: inference requests dispatched by a small ASGI layer instead of FastAPI's router.

/predict/*, /explain/* and V2 `infer` are FastAPI routes like any other (so /docs and the OpenAPI
document describe them exactly), but their handlers take the raw Request and build their own
Response, so FastAPI's per-request machinery (matching a method and path against every route,
the endpoint wrapper, the exception middleware) adds nothing they need. This layer sits just
inside the request guard (deadline, limits, metrics, access log all still apply), finds the
handler by an exact path (or the V2 infer pattern), calls it, and turns an exception into the
response the app's own exception handlers give. Every other request goes on to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.guard import is_inference

Handler = Callable[..., Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class HotPath:
    def __init__(self, app: ASGIApp, *, routers: list[APIRouter], fastapi: FastAPI) -> None:
        """`routers`: the routers holding the inference routes (their other routes are left to
        FastAPI); `fastapi`: the app whose exception handlers turn errors into answers."""
        self.app = app
        hot = [
            route
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.methods == {"POST"} and is_inference(route.path)
        ]
        self._exact = {route.path: route for route in hot if not route.param_convertors}
        self._templated = [route for route in hot if route.param_convertors]
        self._handlers: dict[Any, ExceptionHandler] = dict(fastapi.exception_handlers)
        # The path parameters each endpoint declares (V2 infer takes `name`; `version` it reads
        # from the request), as FastAPI would pass them.
        self._declared = {route.path: frozenset(p.name for p in route.dependant.path_params) for route in hot}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        request = Request(scope, receive)
        try:
            declared = self._declared[route.path]
            params = {k: v for k, v in scope["path_params"].items() if k in declared}
            response = await route.endpoint(request, **params)
        except Exception as exc:
            response = await self._handler_for(exc)(request, exc)
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> APIRoute | None:
        path: str = scope["path"]
        route = self._exact.get(path)
        if route is not None:
            scope["path_params"] = {}
            return route
        for candidate in self._templated:
            match, child_scope = candidate.matches(scope)
            if match is Match.FULL:
                scope["path_params"] = child_scope["path_params"]
                return candidate
        return None

    def _handler_for(self, exc: Exception) -> ExceptionHandler:
        """The handler the app registered for the closest class of `exc` (as Starlette picks it)."""
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        raise exc

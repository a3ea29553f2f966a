"""API keys: `Authorization: Bearer <key>` on prediction, inference and admin endpoints.

With NNSERVE_API_KEY unset the prediction endpoints are open, but the admin endpoints (model
load and unload) are refused outright: changing what a server serves must never be anonymous.
Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _presented_key(request: Request) -> bytes:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def _check(request: Request, keys: list[str]) -> None:
    presented = _presented_key(request)
    # Compare with every key, without stopping at a match, so timing says nothing about which.
    matches = [hmac.compare_digest(presented, key.encode()) for key in keys]
    if not presented or not any(matches):
        raise ApiError(401, "unauthorized", "a valid API key is required", headers=_CHALLENGE)


def check_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_key
    if keys:
        _check(request, keys)


async def require_api_key(request: Request) -> None:
    """check_api_key as a FastAPI dependency."""
    check_api_key(request)


async def require_admin_key(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_key
    if not keys:
        raise ApiError(
            403, "admin_disabled", "administrative endpoints are disabled: set NNSERVE_API_KEY"
        )
    _check(request, keys)

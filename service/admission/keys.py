"""API keys, as every protocol checks them: `Authorization: Bearer <key>` over REST, the
`authorization` metadata over gRPC.

Two sets of keys, because changing what a server serves is not the same right as asking it for
predictions: NNSERVE_API_KEYS opens the prediction and inference endpoints (open when unset), and
NNSERVE_ADMIN_KEYS opens model load, unload and the repository index (refused outright when
unset: changing what a server serves must never be anonymous). A prediction key on an admin
endpoint is a 403: the server knows the caller, who may not do this. Keys are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac

from service.config import Settings
from service.errors import AdminDisabled, Forbidden, Unauthorized

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _presented_key(authorization: str) -> bytes:
    """The key of an `Authorization` header (or gRPC `authorization` metadata) value."""
    scheme, _, token = authorization.partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def _matches(presented: bytes, keys: list[str]) -> bool:
    # Compare with every key, without stopping at a match, so timing says nothing about which.
    matches = [hmac.compare_digest(presented, key.encode()) for key in keys]
    return bool(presented) and any(matches)


def _unauthorized() -> Unauthorized:
    return Unauthorized("a valid API key is required", headers=_CHALLENGE)


def check_key(authorization: str, settings: Settings) -> None:
    """A prediction key, if the server has any; the rule of every protocol."""
    if settings.api_keys and not _matches(_presented_key(authorization), settings.api_keys):
        raise _unauthorized()


def check_admin_key(authorization: str, settings: Settings) -> None:
    """An administrative key: 403 without admin keys or with a prediction key, else 401."""
    if not settings.admin_keys:
        raise AdminDisabled("administrative endpoints are disabled: set NNSERVE_ADMIN_KEYS")
    presented = _presented_key(authorization)
    is_admin = _matches(presented, settings.admin_keys)
    is_predictor = _matches(presented, settings.api_keys)  # always compared: timing tells nothing
    if is_admin:
        return
    if is_predictor:
        raise Forbidden("this key may ask for predictions, not administer the models")
    raise _unauthorized()

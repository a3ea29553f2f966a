"""A REST request's body, read whole before any route sees it, so that its size is judged once:
over NNSERVE_MAX_BODY_BYTES is a 413 before anything parses it, over the byte budget of all
requests in flight a 503, and a body that has not arrived within NNSERVE_BODY_TIMEOUT_SECONDS a
408. The budget is charged as bytes arrive, never as declared: a client that declares a large
body and sends nothing holds nothing (issue 30)."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope

from service.admission.budgets import Admission
from service.errors import BodyTimeout, PayloadTooLarge


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over the limit of {limit} bytes")


def declares_body(scope: Scope, limit: int) -> bool:
    """Whether the request says a body follows; a declared Content-Length over `limit` is a 413
    before a byte is read."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and (len(value) > 18 or int(value) > limit):
                raise _too_large(limit)
            return bool(value != b"0")
        if name == b"transfer-encoding":
            return True
    return False


async def read_body(receive: Receive, limit: int, admission: Admission, timeout: float) -> tuple[bytes, int]:
    """The whole body and the bytes it holds of the budget (given back at once if it is
    refused)."""
    held = 0
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                held = admission.hold(held, size)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        admission.release(held)
        raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except BaseException:
        admission.release(held)
        raise
    return b"".join(chunks), held


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the app, then defers to the real one (which
    reports the client's disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed

"""A REST request's body, read whole before any route sees it, so that its size is judged once:
over NNSERVE_MAX_BODY_BYTES is a 413 before anything parses it, and over the byte budget of all
requests in flight a 503."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope

from service.admission.budgets import Admission
from service.errors import PayloadTooLarge


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over the limit of {limit} bytes")


async def read_body(scope: Scope, receive: Receive, limit: int, admission: Admission) -> tuple[bytes, int]:
    """The whole body and the bytes it holds of the budget (given back at once if it is
    refused). A declared Content-Length is judged before a byte is read."""
    held = 0
    try:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if len(value) > 18 or int(value) > limit:
                    raise _too_large(limit)
                held = admission.hold(held, int(value))
        chunks: list[bytes] = []
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

"""A REST request's body, read whole before any route sees it, so that its size is judged once:
over NNSERVE_MAX_BODY_BYTES is a 413 before anything parses it, over the byte budget of all
requests in flight a 503, and a body that has not arrived within NNSERVE_BODY_TIMEOUT_SECONDS a
408. The budget is charged as bytes arrive, never as declared: a client that declares a large
body and sends nothing holds nothing (issue 30). A body sent compressed (Content-Encoding gzip or
deflate, as Triton's HTTP client sends it when asked to) is decompressed here, under the same
size limit, so every route reads the body it means."""

from __future__ import annotations

import asyncio
import zlib

from starlette.types import Message, Receive, Scope

from service.admission.budgets import Admission
from service.errors import BadRequest, BodyTimeout, PayloadTooLarge, UnsupportedMediaType

# zlib's window bits for each Content-Encoding it can undo: gzip's header and trailer, or
# deflate's zlib wrapper (RFC 9110: "deflate" is the zlib format).
_DECOMPRESS_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


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


def content_encoding(scope: Scope) -> bytes | None:
    """The body's Content-Encoding, lower case, or None when it is sent as it is."""
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            encoding = value.strip().lower()
            return None if encoding in (b"", b"identity") else encoding
    return None


def decompressed(body: bytes, encoding: bytes, limit: int) -> bytes:
    """The body a client compressed, never more than `limit` bytes of it: a small body that
    would inflate past the limit (a zip bomb) is a 413 as soon as the limit is passed."""
    wbits = _DECOMPRESS_WBITS.get(encoding)
    name = encoding.decode("latin-1")[:64]
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {name!r} is not supported: send the body as it is, or gzip or deflate"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the request body is not valid {name} data: {exc}") from None
    if len(inflated) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes once decompressed")
    if not inflater.eof or inflater.unused_data:
        raise BadRequest(f"the request body is not one complete stream of {name} data")
    return inflated


def without_encoding(scope: Scope, length: int) -> list[tuple[bytes, bytes]]:
    """The request's headers as they are for its decompressed body."""
    kept = [(n, v) for n, v in scope["headers"] if n not in (b"content-encoding", b"content-length")]
    return [*kept, (b"content-length", str(length).encode())]


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

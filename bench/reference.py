"""The ceilings nnserve is measured against, each served by uvicorn in a process of its own.

`fastapi_constant` is the reference: a bare FastAPI app answering a constant JSON, with no
middleware and no access log, so its figures carry none of nnserve's costs. `asgi_constant` is
the floor of the stack: the same answer from a plain ASGI callable with no framework at all.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CONSTANT = b'{"status":"ok","model":{"name":"constant","version":1}}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(CONSTANT)).encode())]

fastapi_constant = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_constant.api_route("/{path:path}", methods=["GET", "POST"])
async def constant() -> Response:
    return Response(CONSTANT, media_type="application/json")


async def asgi_constant(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan and websockets: nothing to set up
    more = True
    while more:  # read the body, as a real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": CONSTANT})

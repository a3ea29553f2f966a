"""Inference requests are served by the hot path (service/http/hotpath.py) without reaching FastAPI's
router, with the same answers and errors; everything else goes on to FastAPI."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from service.http.hotpath import HotPath

from support.inprocess import in_process_client
from support.server import MODELS_DIR

WINE = {"guests": ["Dahlia", "Stiffy"]}
TENSOR = {"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 1, 1] + [0] * 7}]}


@pytest.fixture(scope="module")
def routed() -> list[str]:
    """The paths that reached FastAPI's router, recorded below the hot path."""
    return []


@pytest.fixture(scope="module")
def watched(routed: list[str]) -> Iterator[httpx.Client]:
    app = create_app(Settings(models_dir=MODELS_DIR, log_level="warning"))
    original = HotPath.__init__

    def record_what_passes(hot: HotPath, downstream: object, **options: object) -> None:
        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                routed.append(f"{scope['method']} {scope['path']}")
            await downstream(scope, receive, send)  # type: ignore[operator]  # an ASGI app

        original(hot, recording, **options)  # type: ignore[arg-type]  # the options HotPath takes

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HotPath, "__init__", record_what_passes)
        with in_process_client(app) as client:
            client.get("/health")  # builds the middleware stack while the patch is on
            yield client


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/predict/wine", WINE, 200),
        ("/predict/wine?version=1", WINE, 200),
        ("/explain/wine", WINE, 200),
        ("/v2/models/wine/infer", TENSOR, 200),
        ("/v2/models/wine/versions/1/infer", TENSOR, 200),
        ("/predict/wine", {"guests": ["Jeeves"]}, 422),
    ],
)
def test_inference_never_reaches_the_router(
    watched: httpx.Client, routed: list[str], path: str, body: object, status: int
) -> None:
    routed.clear()
    answer = watched.post(path, json=body)
    assert routed == [], f"{path} went through FastAPI's router"
    assert answer.status_code == status and "X-Request-ID" in answer.headers


def test_a_path_that_names_no_route_goes_on_to_fastapi(watched: httpx.Client, routed: list[str]) -> None:
    routed.clear()
    answer = watched.post("/predict/cat", json=WINE)
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    assert routed == ["POST /predict/cat"]


def test_errors_on_the_hot_path_have_the_apps_shape(watched: httpx.Client) -> None:
    unknown = watched.post("/predict/wine", json={"guests": ["Jeeves"]})
    assert unknown.status_code == 422 and unknown.json()["code"] == "invalid_input"
    missing = watched.post("/v2/models/wine/versions/7/infer", json=TENSOR)
    assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"


def test_other_requests_go_on_to_fastapi(watched: httpx.Client, routed: list[str]) -> None:
    routed.clear()
    assert watched.get("/health").status_code == 200
    assert watched.get("/predict/wine").status_code == 405  # a method the hot path does not take
    assert routed == ["GET /health", "GET /predict/wine"]

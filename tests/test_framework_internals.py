"""The fence around what the service borrows from its frameworks' internals for speed. Each test
names one assumption a module makes about uvicorn, Starlette or FastAPI beyond their documented
API, and fails when an upgrade breaks it, before a request does. pyproject.toml bounds these
packages from above and requirements.lock pins them; an upgrade starts by running this module.

- service/http/wire.py subclasses uvicorn's httptools protocol and swaps the transport it is given,
  and times a request's head from its parser callbacks, reading the timeout from uvicorn's Config.
- service/http/hotpath.py reads FastAPI's routes (`dependant`, `param_convertors`, `matches`) and the
  app's exception handlers, and calls endpoints itself.
- service/nnserve.py overrides FastAPI's `build_middleware_stack` to put layers in front.
- service/admission/drain.py overrides uvicorn.Server's signal handler, the context that installs it
  (`capture_signals`) and its per-tick hook, and closes its listeners (`servers`) a tick before its
  shutdown.
"""

from __future__ import annotations

import asyncio
import inspect
import signal

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.admission import drain
from service.admission.drain import DrainingServer
from service.app import create_app
from service.config import Settings
from service.http.routes import predict, v2
from service.http.wire import CoalescingTransport, OneWriteHttpProtocol, ServerConfig
from service.nnserve import NNServe

from support.server import MODELS_DIR


class _Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def test_wire_uvicorns_protocol_keeps_the_transport_it_is_given_and_writes_through_it() -> None:
    """wire.py: HttpToolsProtocol.connection_made(transport) stores that transport as
    `self.transport` and every response byte goes through its write()."""
    assert "connection_made" in vars(HttpToolsProtocol)

    async def connect() -> None:
        config = uvicorn.Config(create_app, factory=True)
        config.load()
        state = uvicorn.server.ServerState()
        protocol = OneWriteHttpProtocol(config=config, server_state=state, app_state={})
        recording = _Recording()
        protocol.connection_made(recording)
        assert isinstance(protocol.transport, CoalescingTransport)
        protocol.transport.write(b"a")
        protocol.transport.write(b"b")
        await asyncio.sleep(0)
        assert recording.written == [b"ab"]

    asyncio.run(connect())


def test_wire_uvicorns_protocol_calls_back_at_a_heads_start_and_end_and_keeps_its_config() -> None:
    """wire.py: the parser calls on_message_begin when a request starts and on_headers_complete
    when its head has ended, connection_lost when the connection goes; the protocol keeps the
    Config it was made with as `self.config` and its loop as `self.loop`."""
    for callback in ("on_message_begin", "on_headers_complete", "connection_lost"):
        assert callback in vars(HttpToolsProtocol), callback

    async def made() -> None:
        config = ServerConfig(create_app, factory=True, head_timeout_seconds=3.0)
        config.load()
        protocol = OneWriteHttpProtocol(
            config=config, server_state=uvicorn.server.ServerState(), app_state={}
        )
        assert protocol.config is config and protocol.loop is asyncio.get_running_loop()

    asyncio.run(made())


def test_hotpath_routes_say_their_path_parameters_converters_and_how_they_match() -> None:
    """hotpath.py: an APIRoute has `dependant.path_params` (with `.name`), `param_convertors`,
    `endpoint`, and `matches(scope)` answering (Match.FULL, {"path_params": ...})."""
    infer = next(r for r in v2.router.routes if isinstance(r, APIRoute) and r.path.endswith("{name}/infer"))
    assert {p.name for p in infer.dependant.path_params} == {"name"}
    assert set(infer.param_convertors) == {"name"}
    scope = {"type": "http", "method": "POST", "path": "/v2/models/wine/infer", "root_path": ""}
    match, child = infer.matches(scope)
    assert match is Match.FULL and child["path_params"] == {"name": "wine"}
    wine = next(r for r in predict.router.routes if isinstance(r, APIRoute) and r.path == "/predict/wine")
    assert not wine.param_convertors and inspect.iscoroutinefunction(wine.endpoint)


def test_hotpath_exception_handlers_are_a_dict_by_exception_class() -> None:
    """hotpath.py: FastAPI keeps the handlers registered with @app.exception_handler in
    `exception_handlers`, keyed by exception class, each called as handler(request, exc)."""
    app = create_app(Settings(models_dir=MODELS_DIR, log_level="warning"))
    assert isinstance(app.exception_handlers, dict)
    assert all(isinstance(key, type | int) for key in app.exception_handlers)
    assert Exception in app.exception_handlers


def test_nnserve_fastapi_builds_its_middleware_stack_through_the_overridable_method() -> None:
    """nnserve.py: Starlette builds the app it serves by calling self.build_middleware_stack()
    (once, at the first request), so the override puts `front` outside everything else."""
    assert "build_middleware_stack" in vars(FastAPI) or hasattr(FastAPI, "build_middleware_stack")
    app = create_app(Settings(models_dir=MODELS_DIR, log_level="warning"))
    assert isinstance(app, NNServe) and app.front is not None
    built = app.build_middleware_stack()
    assert type(built).__name__ == "RequestGuard"  # outermost without CORS origins
    source = inspect.getsource(type(app).__mro__[2].__call__)  # Starlette.__call__
    assert "self.build_middleware_stack()" in source


def test_drain_uvicorn_server_hooks_keep_their_names_and_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """drain.py: uvicorn.Server installs handle_exit(sig, frame) as its signal handler, calls
    on_tick(counter) every tick of its main loop and stops once `should_exit` is set, and skips
    the app's shutdown only when `force_exit` is set (which DrainingServer never sets)."""
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == ["self", "sig", "frame"]
    assert list(inspect.signature(uvicorn.Server.on_tick).parameters) == ["self", "counter"]
    assert "self.handle_exit" in inspect.getsource(uvicorn.Server.capture_signals)
    # DrainingServer replaces capture_signals: serve() must still enter it around the serving,
    # and the signals it handles must still be the stop signals.
    assert "with self.capture_signals():" in inspect.getsource(uvicorn.Server.serve)
    assert {signal.SIGINT, signal.SIGTERM} <= set(uvicorn.server.HANDLED_SIGNALS)
    assert "should_exit" in inspect.getsource(uvicorn.Server.on_tick)
    shutdown = inspect.getsource(uvicorn.Server.shutdown)
    assert "self.force_exit" in shutdown
    # The drain stops listening itself a tick before the shutdown: `servers` holds the listeners.
    assert "self.servers" in inspect.getsource(uvicorn.Server.startup)
    assert shutdown.index("server.close()") < shutdown.index("connection.shutdown()")
    assert issubclass(DrainingServer, uvicorn.Server)
    monkeypatch.setattr(drain, "draining", drain.Flag())  # this process's own flag stays unset
    server = DrainingServer(uvicorn.Config(create_app, factory=True), drain_seconds=0)
    stopping = [server.should_exit]
    for _ in range(3):  # a second and third SIGINT would make uvicorn's own handler force the exit
        server.handle_exit(signal.SIGINT, None)
        stopping.append(server.should_exit)
    assert stopping == [False, True, True, True] and server.force_exit is False

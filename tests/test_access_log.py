"""An operator reads the access log: every request's line arrives, whole and once, however many
requests write at the same moment as the batch is flushed, and closing the log (at exit, or when
logging is configured again) leaves no thread behind and no error in one. In either format, what
a client sends cannot forge a line."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest

from service.observability.logs import BufferedHandler

from support.server import StartServer

WRITERS = 8
LINES_EACH = 5_000


@pytest.fixture
def thread_errors() -> Iterator[list[threading.ExceptHookArgs]]:
    """Exceptions raised in any thread while the test runs (the flush thread's among them)."""
    errors: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = errors.append
    yield errors
    threading.excepthook = previous


def test_concurrent_writers_and_flushes_lose_no_line(thread_errors: list[threading.ExceptHookArgs]) -> None:
    stream = io.StringIO()
    # A tiny capacity and interval: writers trigger flushes all the time, and so does the thread.
    handler = BufferedHandler(stream, interval=0.0005, capacity=7)

    def write(writer: int) -> None:
        start.wait()
        for n in range(LINES_EACH):
            handler.add_line(f"{writer}:{n}")

    def flush_often() -> None:
        start.wait()
        for _ in range(2_000):
            handler.flush()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    threads.append(threading.Thread(target=flush_often))
    start = threading.Barrier(len(threads))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == WRITERS * LINES_EACH
    assert set(lines) == {f"{w}:{n}" for w in range(WRITERS) for n in range(LINES_EACH)}
    for writer in range(WRITERS):  # and each writer's lines in the order it wrote them
        mine = [int(line.split(":")[1]) for line in lines if line.startswith(f"{writer}:")]
        assert mine == sorted(mine)
    assert not thread_errors


def test_close_stops_the_flush_thread_without_an_error(thread_errors: list[threading.ExceptHookArgs]) -> None:
    stream = io.StringIO()
    before = set(threading.enumerate())
    handlers = [BufferedHandler(stream, interval=0.0001) for _ in range(50)]
    flushers = set(threading.enumerate()) - before
    assert len(flushers) == len(handlers)
    for n, handler in enumerate(handlers):
        handler.add_line(f"line {n}")
        handler.close()
    assert not any(thread.is_alive() for thread in flushers)
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(50)]
    assert not thread_errors


FORGED = "2026-01-01 00:00:00,000 INFO nnserve.access POST /v2/repository/models/spam/unload 200"


def test_a_path_cannot_forge_a_text_log_line(start_server: StartServer) -> None:
    """With NNSERVE_LOG_FORMAT=text, a path holding %0A (and %0D, and Unicode's line separator)
    is logged within its request's line (JSON escapes them by its own rules)."""
    server = start_server(NNSERVE_LOG_FORMAT="text")
    path = "/nope%0D%0A" + FORGED.replace(" ", "%20") + "%E2%80%A8" + FORGED.replace(" ", "%20")
    with server.client() as http:
        assert http.get(path).status_code == 404
    log = server.wait_for_log("GET /nope")
    lines = [line for line in log.splitlines() if "unload" in line]
    assert len(lines) == 1 and "nnserve.access GET /nope" in lines[0], lines

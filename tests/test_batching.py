"""Micro-batching never changes an answer: stacked requests get exactly what they would alone."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from dropin_models import CHURN_FEATURES, churn_graph, model
from samples import latest_version, samples

from service import deadline
from service.models.runner import DeadlineExceeded, ModelFailed, ModelRunner
from service.observability.metrics import BatchObserver

from support import slow_model
from support.server import MODELS_DIR, Server, StartServer

WINE = MODELS_DIR / "wine" / "1" / "model.onnx"


class Recorder(BatchObserver):
    """The rows of each finished call, and the calls that entered onnxruntime (`entered`) and
    are inside it now (`running`)."""

    def __init__(self) -> None:
        super().__init__(on_batch=lambda rows, _: self.batches.append(rows), on_running=self._running)
        self.batches: list[int] = []
        self.entered = self.running = 0

    def _running(self, change: int) -> None:
        self.running += change
        self.entered += change > 0


def _runner(recorder: Recorder, milliseconds: float = 0.0, timeout: float | None = None) -> ModelRunner:
    """A runner of the committed wine model, or of one that takes `milliseconds` per call."""
    if milliseconds:
        session = slow_model.session(slow_model.slow_graph(milliseconds))
    else:
        session = ort.InferenceSession(str(WINE), providers=["CPUExecutionProvider"])
    return ModelRunner(
        session,
        ThreadPoolExecutor(1),
        max_batch_rows=64,
        timeout=timeout,
        observer=recorder,
    )


def _party(i: int) -> dict[str, np.ndarray]:
    return {"guests": np.array([[float(b) for b in f"{i % 1024:010b}"]], dtype=np.float32)}


def test_a_lone_request_runs_at_once_alone() -> None:
    recorder = Recorder()
    runner = _runner(recorder)
    (out,) = asyncio.run(runner.run(_party(5)))
    assert recorder.batches == [1]
    np.testing.assert_array_equal(out, runner.session.run(None, _party(5))[0])


def test_concurrent_requests_are_stacked_and_answered_in_order() -> None:
    recorder = Recorder()
    runner = _runner(recorder, milliseconds=10)

    async def all_at_once() -> list[np.ndarray]:
        return [o[0] for o in await asyncio.gather(*(runner.run(_party(i)) for i in range(100)))]

    answers = asyncio.run(all_at_once())
    assert max(recorder.batches) > 1 and sum(recorder.batches) == 100
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer, runner.session.run(None, _party(i))[0], rtol=0, atol=1e-6)


def test_an_inline_model_batches_what_arrives_in_one_turn_of_the_loop() -> None:
    """A model fast enough to run on the event loop (calibrated so) still batches: the requests
    read in one turn of the loop go together at the next, with no task in between."""
    recorder = Recorder()
    session = ort.InferenceSession(str(WINE), providers=["CPUExecutionProvider"])
    runner = ModelRunner(
        session, ThreadPoolExecutor(1), max_batch_rows=64, observer=recorder, inline_below_seconds=1.0
    )
    runner.calibrate(_party(0))
    assert runner.inline
    recorder.batches.clear()
    wrong = {"guests": np.zeros((1, 3), dtype=np.float32)}

    async def scenario() -> tuple[list[Any], list[Any]]:
        answers = await asyncio.gather(*(runner.run(_party(i)) for i in range(100)))
        failed = await asyncio.gather(runner.run(_party(1)), runner.run(wrong), return_exceptions=True)
        return list(answers), list(failed)

    answers, failed = asyncio.run(scenario())
    assert recorder.batches == [64, 36, 1]  # a tensor of another width never joins the others' batch
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer[0], runner.session.run(None, _party(i))[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(failed[0][0], runner.session.run(None, _party(1))[0])
    assert isinstance(failed[1], Exception) and "dimension" in str(failed[1]), failed


async def _until(done: Callable[[], bool]) -> None:
    give_up = time.monotonic() + 30
    while not done() and time.monotonic() < give_up:
        await asyncio.sleep(0.005)


def test_a_request_past_its_deadline_is_dropped_from_the_queue() -> None:
    """The second request queues behind a call already inside onnxruntime (one with no deadline,
    which runs to its end) and its own deadline passes there: it never runs."""
    recorder = Recorder()
    runner = _runner(recorder, milliseconds=300)

    async def scenario() -> list[object]:
        first = asyncio.ensure_future(runner.run(_party(1)))
        await _until(lambda: recorder.running > 0)
        token = deadline.start(0.1)
        second = asyncio.ensure_future(runner.run(_party(2)))  # the task keeps the deadline
        deadline.reset(token)
        results: list[object] = list(await asyncio.gather(first, second, return_exceptions=True))
        # A call kept past its deadline would enter onnxruntime as the first leaves, and is
        # counted as it enters.
        await _until(lambda: recorder.running == 0)
        await asyncio.sleep(0.05)
        return results

    first, second = asyncio.run(scenario())
    assert not isinstance(first, Exception) and isinstance(second, DeadlineExceeded)
    assert recorder.entered == 1 and recorder.batches == [1]


def test_a_call_nobody_waits_for_any_more_is_stopped_inside_onnxruntime() -> None:
    """Its caller's deadline passed while it ran: onnxruntime is told to stop (RunOptions.terminate)
    rather than run on for nobody, and no batch is recorded as finished."""
    recorder = Recorder()
    runner = _runner(recorder, milliseconds=300, timeout=0.1)

    async def scenario() -> object:
        [result] = await asyncio.gather(runner.run(_party(1)), return_exceptions=True)
        await _until(lambda: recorder.running == 0)
        return result

    assert isinstance(asyncio.run(scenario()), DeadlineExceeded)
    assert recorder.entered == 1 and recorder.batches == []


def test_a_failing_input_fails_only_its_own_request_and_the_runner_goes_on() -> None:
    """onnxruntime refuses the batch a wrong input joined; each caller's inputs then run alone, so
    the others sharing its batch get their answers and only its caller hears the failure."""
    recorder = Recorder()
    runner = _runner(recorder)
    wrong = {"guests": np.zeros((1, 10), dtype=np.float64)}  # joins the batch, which onnxruntime refuses

    async def scenario() -> tuple[list[object], list[np.ndarray]]:
        answers: list[object] = list(
            await asyncio.gather(
                runner.run(_party(1)), runner.run(wrong), runner.run(_party(2)), return_exceptions=True
            )
        )
        return answers, await runner.run(_party(3))

    (first, failed, second), after = asyncio.run(scenario())
    assert isinstance(failed, ModelFailed) and "type" in str(failed), failed
    for answer, party in ((first, 1), (second, 2), (after, 3)):
        assert isinstance(answer, list), answer
        np.testing.assert_array_equal(answer[0], runner.session.run(None, _party(party))[0])
    assert recorder.batches == [1, 1, 1]  # the batch of three failed; each then alone


@pytest.mark.parametrize("callers", [7, 8])
def test_a_client_whose_values_fail_the_model_cannot_fail_the_others_in_its_batch(callers: int) -> None:
    """A graph that fails at run time on some values only (churn v2 of the shadow tests: any input
    over 0.5 reshapes its [rows, 1] output to [-1, 8], for the whole batch it is in): with 7 rows
    onnxruntime refuses the batch; with 8 it answers one row of 8, no longer a row a caller. Either
    way the other callers batched with such an input get what they would get alone."""
    graph = model(churn_graph(fail_above=0.5)).SerializeToString()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    runner = ModelRunner(session, ThreadPoolExecutor(1), max_batch_rows=64)

    def customer(value: float) -> dict[str, np.ndarray]:
        return {"customer": np.full((1, CHURN_FEATURES), value, np.float32)}

    async def scenario() -> list[object]:
        calls = (runner.run(customer(0.9 if n == 3 else n / 20)) for n in range(callers))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    answers = asyncio.run(scenario())
    assert isinstance(answers[3], ModelFailed), answers[3]
    for n, answer in enumerate(answers):
        if n != 3:
            assert isinstance(answer, list), (n, answer)
            np.testing.assert_array_equal(answer[0], session.run(None, customer(n / 20))[0])


def _concurrently(url: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def send() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=64)) as http:
            responses = await asyncio.gather(*(http.post("/predict/spam", json=b) for b in bodies))
        assert {r.status_code for r in responses} == {200}
        return [r.json() for r in responses]

    return asyncio.run(send())


@pytest.fixture(scope="module")
def unbatched(start_server: StartServer) -> Server:
    return start_server(NNSERVE_BATCHING="false")


def _spam_batches(url: str) -> tuple[float, float]:
    """(rows, onnxruntime calls) the latest spam version has run so far, from /metrics."""
    metrics = httpx.get(f"{url}/metrics").text
    labels = f'model="spam",version="{latest_version("spam")}"'
    rows = re.search(rf"nnserve_batch_size_sum\{{{labels}\}} (\S+)", metrics)
    calls = re.search(rf"nnserve_batch_size_count\{{{labels}\}} (\S+)", metrics)
    assert rows and calls, metrics
    return float(rows.group(1)), float(calls.group(1))


def test_served_batching_gives_each_request_its_own_answer(server: Server, unbatched: Server) -> None:
    rows_before, calls_before = _spam_batches(server.url)
    bodies = [{"text": s.input["text"]} for s in samples("spam")][:200]
    batched = _concurrently(server.url, bodies)
    alone = _concurrently(unbatched.url, bodies)
    one_by_one = [httpx.post(f"{server.url}/predict/spam", json=b).json() for b in bodies[:50]]
    for got, expected in zip(batched, alone, strict=True):
        assert got["spam"] == expected["spam"]
        assert got["probability"] == pytest.approx(expected["probability"], abs=1e-6)
    assert [a["spam"] for a in batched[:50]] == [a["spam"] for a in one_by_one]
    rows, calls = _spam_batches(server.url)
    assert rows - rows_before == len(bodies) + 50
    assert calls - calls_before < rows - rows_before, "no batch of more than one request formed"


def test_rows_of_other_widths_wait_for_a_batch_of_their_own() -> None:
    """Spam's token ids are as wide as the text has words (padded to a few widths): requests of
    one width go together, the others keep their turn, and each gets what it would alone."""
    folder = MODELS_DIR / "spam" / str(latest_version("spam"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    recorder = Recorder()
    runner = ModelRunner(session, ThreadPoolExecutor(1), max_batch_rows=64, observer=recorder)
    names = [i.name for i in session.get_inputs()]

    def feeds(i: int) -> dict[str, np.ndarray]:
        width = 8 if i % 3 else 16
        return {names[0]: np.full((1, width), i, dtype=np.int64), names[1]: np.ones((1, width), np.float32)}

    async def all_at_once() -> list[np.ndarray]:
        return [o[0] for o in await asyncio.gather(*(runner.run(feeds(i)) for i in range(30)))]

    answers = asyncio.run(all_at_once())
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer, session.run(None, feeds(i))[0], atol=1e-6)
    assert recorder.batches == [10, 20]  # the first width's rows together, then the other's


def test_a_slower_model_runs_on_the_loop_when_idle_and_on_the_thread_under_load() -> None:
    """No hop where it does not pay: a request that finds the model idle runs on the event
    loop's thread; one that arrives while another is in flight goes to the inference thread."""
    threads: list[int] = []
    observer = BatchObserver(on_batch=lambda rows, _: threads.append(threading.get_ident()))
    session = ort.InferenceSession(str(WINE), providers=["CPUExecutionProvider"])
    runner = ModelRunner(
        session,
        ThreadPoolExecutor(1),
        max_batch_rows=64,
        observer=observer,
        inline_when_idle_below_seconds=1.0,
    )
    runner.calibrate(_party(0))
    assert runner.inline_when_idle and not runner.inline

    async def scenario() -> None:
        await asyncio.sleep(0.01)  # idle for longer than a call
        first = asyncio.ensure_future(runner.run(_party(1)))
        await asyncio.sleep(0)  # `first` found the model idle: its call is next on the loop
        second = asyncio.ensure_future(runner.run(_party(2)))  # starts while `first` is in flight
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread
    assert len(threads) == 2 and threads[1] != loop_thread

"""Where one request's time goes, stage by stage, timed in process with the service's own functions.

Each stage is what the route does for one item, called the way the route calls it: parsing the
body (pydantic-core or the V2 codec), preprocessing (the card's encoder, the digit
normalisation), the model (one onnxruntime call, batch 1) and writing the answer (orjson). What
the served latency holds beyond these and beyond the bare reference's own latency is the cost of
nnserve's layers (guard, hot path, batching queue, access log, metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.cases import MODELS, latest_version
from service.admission.budgets import Admission
from service.card import BagOfWordsVocabulary, GuestRoster, MnistNormalisation, ModelCard, TokenIdVocabulary
from service.config import Settings
from service.features import (
    GuestEncoder,
    decode_base64_image,
    image_bytes_to_digit,
    pixels_to_digit,
    pixels_to_digits,
)
from service.http.guard import RequestGuard
from service.http.pixel_body import read_pixels
from service.http.schemas import DigitRequest, SpamRequest, WineRequest
from service.models.loading import open_session, spam_encoder
from service.observability.logs import BufferedHandler, JsonFormatter, log_access
from service.observability.metrics import Metrics
from service.v2.codec import CARD_DATATYPES, encode_response, feeds_for, parse_request

STAGES = ("parse", "preprocess", "model", "response")


def _microseconds(call: Callable[[], object], seconds: float = 0.3) -> float:
    """Median CPU time of one call, from batches of calls over `seconds` of it: this thread's
    CPU (time.thread_time), so that other processes on a shared machine do not count."""
    call()
    samples: list[float] = []
    spent = 0.0
    while spent < seconds or len(samples) < 5:
        started = time.thread_time()
        for _ in range(10):
            call()
        samples.append((time.thread_time() - started) / 10)
        spent += samples[-1] * 10
    return float(np.median(samples)) * 1e6


class Model:
    """A committed version and its onnxruntime session on one thread, as the bench times models."""

    def __init__(self, folder: Path) -> None:
        self.card = ModelCard.read(folder)
        self.session = open_session(str(folder / "model.onnx"), 1, self.card.session.disabled_optimizers)

    def run(self, rows: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        feeds = rows if isinstance(rows, dict) else {self.card.inputs[0].name: rows}
        result: np.ndarray = self.session.run(None, feeds)[0]
        return result


def _json(answer: Callable[[np.ndarray], dict[str, Any]]) -> Callable[[np.ndarray], bytes]:
    return lambda out: orjson.dumps(answer(out), option=orjson.OPT_SERIALIZE_NUMPY)


def _split(
    parse: Callable[[], Any],
    preprocess: Callable[[Any], np.ndarray | dict[str, np.ndarray]],
    model: Model,
    respond: Callable[[np.ndarray], object],
) -> dict[str, float]:
    parsed = parse()
    rows = preprocess(parsed)
    output = model.run(rows)
    return {
        "parse": _microseconds(parse),
        "preprocess": _microseconds(lambda: preprocess(parsed)),
        "model": _microseconds(lambda: model.run(rows)),
        "response": _microseconds(lambda: respond(output)),
    }


def stage_split(path: str, body: bytes, header_length: int | None, folder: Path) -> dict[str, float] | None:
    """Microseconds per stage for one request of this kind; None for routes not split here."""
    model = Model(folder)
    ref = {"name": model.card.name, "version": model.card.version}
    preprocessing = model.card.preprocessing
    if path == "/predict/wine" and isinstance(preprocessing, GuestRoster):
        guests = GuestEncoder(preprocessing.roster)
        return _split(
            lambda: WineRequest.model_validate_json(body),
            lambda parsed: guests.encode(parsed.items()[0])[np.newaxis],
            model,
            _json(lambda out: {"bottles": round(float(out[0, 0]), 4), "model": ref}),
        )
    if path == "/predict/spam" and isinstance(preprocessing, BagOfWordsVocabulary | TokenIdVocabulary):
        words = spam_encoder(model.card)
        return _split(
            lambda: SpamRequest.model_validate_json(body),
            lambda parsed: words.feeds([words.encode(parsed.items()[0])]),
            model,
            _json(
                lambda out: {"spam": bool(out[0, 1] >= 0.5), "probability": float(out[0, 1]), "model": ref}
            ),
        )
    if path == "/predict/digit" and isinstance(preprocessing, MnistNormalisation):
        floor = preprocessing.noise_floor

        def digit(parsed: DigitRequest) -> np.ndarray:
            item = parsed.items()[0]
            if item.image is not None:
                image = decode_base64_image(item.image, 1 << 24)
                return image_bytes_to_digit(image, 1 << 24, floor)[np.newaxis, np.newaxis]
            return pixels_to_digit(np.asarray(item.pixels, dtype=np.float32), floor)[np.newaxis, np.newaxis]

        return _split(
            lambda: read_pixels(body) or DigitRequest.model_validate_json(body),  # as the route reads it
            digit,
            model,
            _json(
                lambda out: {"digit": int(out[0].argmax()), "probabilities": out[0].tolist(), "model": ref}
            ),
        )
    if path.startswith("/v2/models/"):
        length = None if header_length is None else str(header_length)
        parsed = parse_request(body, length, 256)
        output = model.card.outputs[0]
        return _split(
            lambda: parse_request(body, length, 256),
            lambda request: feeds_for(request, model.card.inputs)[model.card.inputs[0].name],
            model,
            lambda out: encode_response(
                model.card.name,
                model.card.version,
                parsed,
                {output.name: (out, CARD_DATATYPES[output.dtype])},
            ),
        )
    return None


def bookkeeping_us() -> dict[str, float]:
    """What every request pays for being guarded and counted, timed in process: the request guard
    (deadline, limits, request id, metrics and access line) around an app that answers a
    constant, minus that app alone; and within it the metric updates a request and its batch make
    and the access line, on their own."""
    settings = Settings()
    metrics = Metrics.create()
    log = logging.getLogger("nnserve.access")
    saved = log.handlers[:], log.level, log.propagate
    with open(os.devnull, "w") as devnull:
        handler = BufferedHandler(devnull)
        handler.setFormatter(JsonFormatter())
        log.handlers[:], log.level, log.propagate = [handler], logging.INFO, False
        try:
            guard = RequestGuard(_constant, settings=settings, metrics=metrics, admission=Admission(settings))
            requests = metrics.requests.labels("/predict/wine", "200", "rest")
            latency = metrics.request_seconds.labels("/predict/wine", "rest")
            batch = metrics.observer("wine", 1)

            def count() -> None:
                metrics.in_flight.inc()
                metrics.in_flight.dec()
                requests.inc()
                latency.observe(0.0003)
                batch.on_queue_wait(0.00001)
                batch.on_batch(1, 0.000006)

            fields = {"method": "POST", "path": "/predict/wine", "status": 200, "latency_ms": 0.3}
            costs = {
                "guard": _asgi_us(guard) - _asgi_us(_constant),
                "metrics": _microseconds(count),
                "access line": _microseconds(lambda: log_access("POST /predict/wine 200", fields)),
            }
        finally:
            handler.close()
            log.handlers[:], log.level, log.propagate = saved
    return costs


async def _constant(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _asgi_us(app: ASGIApp, calls: int = 20_000, clock: Callable[[], float] = time.perf_counter) -> float:
    """Microseconds per POST /predict/wine through `app`, driven in one event loop (by `clock`:
    time.thread_time counts only this thread's CPU, not the time other processes took it)."""
    body = b'{"guests": ["Dahlia"]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_: Message) -> None:
        pass

    async def drive() -> float:
        started = clock()
        for _ in range(calls):
            scope = {"type": "http", "method": "POST", "path": "/predict/wine", "headers": headers}
            await app(scope, receive, send)
        return (clock() - started) / calls * 1e6

    return asyncio.run(drive())


def _raw_feeds(model: Model, batch: int, email: str) -> dict[str, np.ndarray]:
    """`batch` rows of the model's inputs: zeros, but for a token-id spam model the bench's email
    as the service encodes it (its token ids are as wide as the email's words)."""
    if isinstance(model.card.preprocessing, TokenIdVocabulary):
        encoder = spam_encoder(model.card)
        return encoder.feeds([encoder.encode(email)] * batch)
    return {
        spec.name: np.zeros([batch if d == -1 else d for d in spec.shape], dtype=spec.dtype)
        for spec in model.card.inputs
    }


def raw_onnxruntime(
    folders: dict[str, Path], batch_sizes: dict[str, float], email: str
) -> list[dict[str, float | str | int]]:
    """Calls per second of each model in-process (batch 1 and the mean batch served): the floor
    under any server's latency."""
    rows: list[dict[str, float | str | int]] = []
    for name, folder in folders.items():
        model = Model(folder)
        for batch in sorted({1, max(1, round(batch_sizes.get(name, 1)))}):
            x = _raw_feeds(model, batch, email)
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                model.run(x)
                calls += 1
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "calls_per_s": calls / seconds,
                    "rows_per_s": calls * batch / seconds,
                    "us_per_call": seconds / calls * 1e6,
                }
            )
    return rows


def normalisation_us(folder: Path, batch: int = 32) -> dict[str, float]:
    """The digit normalisation per image (the card's noise floor), one image per call as a
    single request has it, and `batch` stacked in one call as a batch request and training have."""
    card = ModelCard.read(folder)
    floor = card.preprocessing.noise_floor if isinstance(card.preprocessing, MnistNormalisation) else 0.0
    items = json.loads((folder / "samples.json").read_text())["items"]
    pixels = np.array(
        [i["input"]["pixels"] for i in items if "pixels" in i["input"]][:batch], dtype=np.float32
    )
    return {
        "one at a time": _microseconds(lambda: [pixels_to_digit(p, floor) for p in pixels]) / len(pixels),
        f"{len(pixels)} stacked": _microseconds(lambda: pixels_to_digits(pixels, floor)) / len(pixels),
    }


def model_us(folder: Path) -> float:
    """A batch-1 call of a committed version on one thread, in CPU microseconds (a digit of
    zeros: an int8 or float graph costs the same whatever the pixels)."""
    model = Model(folder)
    rows = _raw_feeds(model, 1, "")
    return _microseconds(lambda: model.run(rows), 1.0)


def main() -> None:
    """The in-process figures alone, in seconds rather than make bench's many minutes: the
    digit normalisation per image and every committed digit version's batch-1 call on one
    thread (`python -m bench.stages`)."""
    normalisation = normalisation_us(latest_version("digit"))
    print(
        "digit normalisation per image: "
        + ", ".join(f"{how} {us:.1f} us" for how, us in normalisation.items())
    )
    for folder in sorted((MODELS / "digit").iterdir()):
        if folder.name.isdigit():
            print(f"digit v{folder.name}: {model_us(folder):.1f} us a row (batch 1, one thread)")


if __name__ == "__main__":
    main()

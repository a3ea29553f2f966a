"""A /predict/digit body of pixels read straight from its bytes into float32 arrays.

pydantic reads 784 numbers as 784 Python floats, and numpy then reads those back: about 35 us a
digit, more than the network's own time. simdjson (pysimdjson) parses the body and hands each
pixel list over as one buffer of doubles, so no Python float is made (about 8 us). This is only
a fast path for the bodies that are plainly right: `{"pixels": [...]}` (784 numbers or 28 rows of
the same length) or `{"batch": [{"pixels": [...]}, ...]}`. Anything else, every body with a wrong
value among them, returns None and goes to pydantic, so a bad body gets exactly the answer it got
before (a bad value still named by its index), and the limits after parsing (batch size, 784
pixels, values in [0, 1]) apply to both paths alike.

Doubles are cast to float32 as numpy casts pydantic's Python floats, so both paths give the same
bits (tests/test_send_digit_pixels.py compares them on generated bodies, valid and not).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import simdjson

from service.http.schemas import DigitItem, DigitRequest


class _Parsers(threading.local):
    """A simdjson parser per thread (one parser is not safe to share between threads); it keeps
    its buffers from body to body."""

    def __init__(self) -> None:
        self.parser = simdjson.Parser()


_parsers = _Parsers()


class _NotPlain(Exception):
    """The body is not one of the plain forms: pydantic reads it."""


def read_pixels(body: bytes) -> DigitRequest | None:
    """The request, its pixels as float32 arrays (784, or rows x columns), or None for pydantic."""
    try:
        return _read(_parsers.parser, body)
    except (_NotPlain, ValueError, TypeError, KeyError, IndexError):
        return None
    except RuntimeError:  # a document of this parser was still referenced somewhere: a new parser
        _parsers.parser = simdjson.Parser()
        return None


def _read(parser: simdjson.Parser, body: bytes) -> DigitRequest:
    document: Any = parser.parse(body)
    _only_key(document)
    if "pixels" in document:
        pixels, arrays = _pixels(document["pixels"])
        request = DigitRequest.model_construct(image=None, pixels=_as_field(pixels), batch=None)
    else:
        batch = document["batch"]
        if not isinstance(batch, simdjson.Array) or not len(batch):
            raise _NotPlain
        arrays, items = 1, []
        item: Any
        for item in batch:
            _only_key(item, "pixels")
            pixels, counted = _pixels(item["pixels"])
            items.append(DigitItem.model_construct(image=None, pixels=_as_field(pixels)))
            arrays += counted
        request = DigitRequest.model_construct(image=None, pixels=None, batch=items)
    # Every '[' of the body opens an array counted above: the keys are fixed and every value a
    # number, so no string can hold one. A deeper array, which as_buffer would have flattened
    # into the pixels, is an array not counted.
    if body.count(b"[") != arrays:
        raise _NotPlain
    return request


def _only_key(value: object, *allowed: str) -> None:
    if not isinstance(value, simdjson.Object) or len(value) != 1:
        raise _NotPlain
    if next(iter(value)) not in (allowed or ("pixels", "batch")):
        raise _NotPlain


def _as_field(pixels: np.ndarray) -> Any:
    """The array stands in the `pixels` field for the lists pydantic would put there: the route
    turns either into a float32 array with np.asarray, which leaves this one as it is."""
    return pixels


def _pixels(value: Any) -> tuple[np.ndarray, int]:
    """The numbers as float32 (flat, or rows x columns), and how many arrays held them."""
    if not isinstance(value, simdjson.Array) or not len(value):
        raise _NotPlain
    doubles = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    with np.errstate(over="ignore"):  # 1e300 becomes inf, as from a Python float: out of range later
        flat = doubles.astype(np.float32)
    first: Any = value[0]
    if not isinstance(first, simdjson.Array):
        return flat, 1
    rows, width = len(value), len(first)
    if any(not isinstance(row, simdjson.Array) or len(row) != width for row in value):
        raise _NotPlain  # ragged rows: pydantic reads them, and the route names the fault
    return flat.reshape(rows, width), 1 + rows

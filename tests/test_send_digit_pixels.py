"""A client sends a digit as pixels: the service reads them straight into float32 arrays
(service/http/pixel_body.py) and must read every body exactly as pydantic does, valid or not."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.http.pixel_body import read_pixels
from service.http.schemas import DigitItem, DigitRequest

# Numbers a client may send, and the values that must send a body to pydantic.
NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 0.0, -0.0, 1e-320, 0.1, 1e308]),
)
ODD = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.just({}), st.just([]), st.just([[0.5]]))
VALUES = st.one_of(NUMBERS, NUMBERS, NUMBERS, ODD)
ROW = st.lists(VALUES, min_size=0, max_size=6)
PIXELS = st.one_of(
    ROW, st.lists(ROW, max_size=4), st.lists(st.lists(NUMBERS, min_size=3, max_size=3), max_size=4)
)
ITEM = st.one_of(
    st.fixed_dictionaries({"pixels": PIXELS}),
    st.fixed_dictionaries({"pixels": PIXELS, "image": st.just("AAAA")}),
    st.fixed_dictionaries({"image": st.just("AAAA")}),
    st.fixed_dictionaries({"pixel": PIXELS}),
)
BODY = st.one_of(ITEM, st.fixed_dictionaries({"batch": st.lists(ITEM, max_size=3)}), PIXELS)


def _bits(pixels: Any) -> np.ndarray:
    """The float32 bits the route would feed on: how both paths' pixels are compared."""
    with np.errstate(over="ignore"):  # 1e300 is inf in float32 on both paths
        return np.asarray(pixels, dtype=np.float32).view(np.uint32)


def _same_items(fast: list[DigitItem], slow: list[DigitItem]) -> None:
    assert len(fast) == len(slow)
    for mine, theirs in zip(fast, slow, strict=True):
        assert mine.image is None and theirs.image is None
        expected = _bits(theirs.pixels)
        assert np.asarray(mine.pixels).dtype == np.float32
        assert _bits(mine.pixels).shape == expected.shape
        assert np.array_equal(_bits(mine.pixels), expected)


def _agrees_with_pydantic(body: bytes) -> None:
    fast = read_pixels(body)
    try:
        slow = DigitRequest.model_validate_json(body)
    except ValidationError:
        assert fast is None, f"the fast path accepted a body pydantic refuses: {body[:200]!r}"
        return
    if fast is not None:
        assert fast.batched == slow.batched
        _same_items(fast.items(), slow.items())


@settings(max_examples=400, deadline=None)
@given(BODY, st.sampled_from([None, 0, 1]))
def test_generated_bodies_are_read_as_pydantic_reads_them(body: Any, indent: int | None) -> None:
    _agrees_with_pydantic(json.dumps(body, indent=indent).encode())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_bodies_are_read_as_pydantic_reads_them(data: st.DataObject) -> None:
    text = json.dumps({"pixels": [0.25, 0.5, 1, 0.0]})
    at = data.draw(st.integers(0, len(text)))
    inserted = data.draw(
        st.sampled_from(["[", "]", ",", "-", "+", "0", ".", "e", " ", '"', "{", "1e999", "01"])
    )
    cut = data.draw(st.integers(0, 2))
    _agrees_with_pydantic((text[:at] + inserted + text[at + cut :]).encode())


def test_the_plain_forms_take_the_fast_path() -> None:
    pixels = [round(i / 783, 5) for i in range(784)]
    nested = [pixels[row * 28 : (row + 1) * 28] for row in range(28)]
    for body in ({"pixels": pixels}, {"pixels": nested}, {"batch": [{"pixels": pixels}, {"pixels": nested}]}):
        raw = json.dumps(body).encode()
        fast = read_pixels(raw)
        assert fast is not None, body.keys()
        _same_items(fast.items(), DigitRequest.model_validate_json(raw).items())


def test_edge_bodies_go_to_pydantic() -> None:
    for raw in (
        b'{"pixels": [0.5, [0.5]]}',  # a flat list with a nested one inside
        b'{"pixels": [[0.5, [0.5]], [0.5, 0.5]]}',
        b'{"pixels": [0.5], "pixels": [0.5]}',
        b'{"pixels": [true, 0.5]}',
        b'{"pixels": [1e400]}',
        b'{"batch": []}',
        b'{"pixels": []}',
    ):
        assert read_pixels(raw) is None, raw
        _agrees_with_pydantic(raw)


def test_a_bad_pixel_is_named_by_its_index(client: httpx.Client) -> None:
    pixels: list[Any] = [0.0] * 784
    pixels[417] = "0.5"
    response = client.post("/predict/digit", json={"batch": [{"pixels": [0.0] * 784}, {"pixels": pixels}]})
    assert response.status_code == 422
    assert "batch.1.pixels" in response.text and "417" in response.text


def test_fast_and_slow_bodies_get_the_same_answer(client: httpx.Client) -> None:
    pixels = [0.0] * 784
    for i in range(300, 500, 3):
        pixels[i] = 0.9
    plain = client.post("/predict/digit", json={"pixels": pixels})
    # A key order pydantic alone reads (the fast path takes one key), same item.
    slow = client.post("/predict/digit", json={"batch": [{"pixels": pixels, "image": None}]})
    assert plain.status_code == slow.status_code == 200
    assert plain.json()["probabilities"] == slow.json()["predictions"][0]["probabilities"]

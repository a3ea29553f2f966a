"""A developer reads /docs: every response example shown there is what the service answers to
the request it illustrates, on the model version the example names, so the documentation cannot
drift from the models (as the README's examples cannot: tests/test_readme_examples.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from service.http import schemas

# The request each response example answers. Every schema with a response example is listed.
ILLUSTRATED: dict[type[BaseModel], tuple[str, dict[str, Any]]] = {
    schemas.WineExplanation: ("/explain/wine", {"guests": ["Dahlia", "Stiffy"]}),
    schemas.SpamExplanation: ("/explain/spam", {"text": "Lunch at noon tomorrow?"}),
    schemas.DigitExplanation: ("/explain/digit", {"pixels": [0.0] * 784}),
}


def _response_examples() -> list[tuple[type[BaseModel], dict[str, Any]]]:
    """The examples of response schemas (request schemas forbid extra fields; answers don't)."""
    found = []
    for value in vars(schemas).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseModel)
            and value.model_config.get("extra") != "forbid"
        ):
            extra = value.model_config.get("json_schema_extra")
            examples = extra.get("examples", []) if isinstance(extra, dict) else []
            assert isinstance(examples, list)
            found += [(value, example) for example in examples if isinstance(example, dict)]
    return found


def _matches(example: Any, actual: Any, where: str = "") -> None:
    """The example as the answer, its numbers rounded to 4 places; a list of objects may show
    only some of the answer's items (the hidden units), each of which must be in the answer."""
    if isinstance(example, dict):
        assert isinstance(actual, dict) and set(example) == set(actual), (
            f"{where}: {set(example) ^ set(actual)}"
        )
        for key in example:
            _matches(example[key], actual[key], f"{where}.{key}")
    elif (
        isinstance(example, list) and example and isinstance(example[0], dict) and len(example) < len(actual)
    ):
        for item in example:
            assert any(_equal(item, other) for other in actual), f"{where}: {item} is not in the answer"
    elif isinstance(example, list):
        assert isinstance(actual, list) and len(example) == len(actual), where
        for n, (want, got) in enumerate(zip(example, actual, strict=True)):
            _matches(want, got, f"{where}[{n}]")
    elif isinstance(example, float):
        assert actual == pytest.approx(example, abs=1e-4), where
    else:
        assert example == actual, where


def _equal(example: Any, actual: Any) -> bool:
    try:
        _matches(example, actual)
    except AssertionError:
        return False
    return True


def test_every_response_example_is_illustrated() -> None:
    assert {schema for schema, _ in _response_examples()} == set(ILLUSTRATED)


@pytest.mark.parametrize(
    ("schema", "example"), _response_examples(), ids=lambda v: getattr(v, "__name__", "")
)
def test_a_response_example_is_the_answer_of_the_version_it_names(
    client: httpx.Client, schema: type[BaseModel], example: dict[str, Any]
) -> None:
    path, body = ILLUSTRATED[schema]
    answer = client.post(path, params={"version": example["model"]["version"]}, json=body)
    assert answer.status_code == 200, answer.text
    _matches(example, answer.json())

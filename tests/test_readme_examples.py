"""A new user copies the README's curl lines and its Python snippet: each must answer what the
README prints (tests/readme_examples.py says how examples are found and compared, and how to
refresh the printed answers when the models change)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from readme_examples import ANSWER_PROPERTY, README, Example, examples, matches, reprint

from support.server import Server, StartServer
from support.tools import require_tool

EXAMPLES = examples(README.read_text())


@pytest.fixture(scope="module")
def api_key() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def keyed_server(start_server: StartServer, api_key: str) -> Server:
    """The administrative examples need a server with NNSERVE_ADMIN_KEYS; the others one without."""
    return start_server(NNSERVE_ADMIN_KEYS=api_key)


def test_the_readme_shows_curl_and_python_examples() -> None:
    assert {example.kind for example in EXAMPLES} == {"sh", "python"}
    assert any("/predict/digit" in example.code for example in EXAMPLES)


# The server fixture is chosen per example (request.getfixturevalue), out of conftest's sight:
# the marker it would add is given here.
@pytest.mark.process
@pytest.mark.parametrize("example", EXAMPLES, ids=[f"README.md:{e.line}" for e in EXAMPLES])
def test_a_readme_example_answers_as_printed(
    example: Example,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
    api_key: str,
) -> None:
    server: Server = request.getfixturevalue("keyed_server" if example.needs_key else "server")
    _answers_as_printed(example, server, api_key, record_property)


@pytest.mark.smoke
def test_the_first_curl_example_answers_as_printed(
    server: Server, record_property: Callable[[str, object], None], api_key: str
) -> None:
    """The fast ring's one example: the first a reader meets, on the server it already runs."""
    first = next(example for example in EXAMPLES if example.kind == "sh" and not example.needs_key)
    _answers_as_printed(first, server, api_key, record_property)


def _answers_as_printed(
    example: Example, server: Server, api_key: str, record_property: Callable[[str, object], None]
) -> None:
    if example.kind == "sh":
        require_tool("curl")
    actual = example.run(server.url.removeprefix("http://"), api_key, server.grpc_address)
    now = reprint(example.answer, actual)
    record_property(ANSWER_PROPERTY, (example.answer_line, now))
    assert matches(example.answer, actual), (
        f"README.md:{example.answer_line} prints\n  {example.answer}\nbut the service answers\n  {now}\n"
        "(.venv/bin/python -m tests.readme_examples --write puts the new answers in README.md)"
    )


@pytest.mark.parametrize(
    ("printed", "actual"),
    [
        ('{"bottles":4.3184,"buy":5}', '{"bottles":4.318370342,"buy":5}'),
        ('{"p":[0.0037,0.0087,...],"v":1}', '{"p":[0.00373582,0.00873587,0.0108,0.945],"v":1}'),
        ("array([[4.3183703]], dtype=float32)", "array([[4.3183703]], dtype=float32)"),
    ],
)
def test_an_answer_matches_at_the_printed_precision(printed: str, actual: str) -> None:
    assert matches(printed, actual)
    assert reprint(printed, actual) == printed


@pytest.mark.parametrize(
    ("printed", "actual", "now"),
    [
        ('{"bottles":4.3184,"buy":5}', '{"bottles":4.3194,"buy":5}', '{"bottles":4.3194,"buy":5}'),
        ('{"buy":5,"version":1}', '{"buy":5,"version":2}', '{"buy":5,"version":2}'),
        ('{"p":[0.0037,...],"v":1}', '{"p":[0.01234567,0.9],"v":1}', '{"p":[0.0123,...],"v":1}'),
        ('{"spam":true}', '{"spam":false}', '{"spam":false}'),
        ('{"digit":3,...}', '{"error":"not ready"}', '{"error":"not ready"}'),
    ],
)
def test_an_answer_that_drifted_fails_and_is_reprinted(printed: str, actual: str, now: str) -> None:
    assert not matches(printed, actual)
    assert reprint(printed, actual) == now

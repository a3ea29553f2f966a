"""Hostile input, generated and hand-made: nothing a client sends gets a 5xx, and every answer
matches what the OpenAPI document says.

Schemathesis reads the running service's /openapi.json and fuzzes every operation in it, valid
and invalid data alike (examples, coverage and fuzzing phases, then stateful chains built from
the links it infers). Nothing in the document is excluded: /metrics is documented as text/plain
and checked as such; /docs, /redoc, /openapi.json, / and /static are not operations of the
document (they are pages for people), so a fuzzer has no contract to hold them to.

What the fuzzer cannot generate (raw bytes that are not UTF-8, JSON nested 10,000 deep, lone
surrogates, bodies at the size limit) is sent by hand below.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.server import MODELS_DIR, Server, StartServer
from support.tools import require_tool

MIN_CASES = 100
API_KEY = "fuzz-admin-key"
# Every check but positive_data_acceptance: a schema cannot say that a guest must be on the
# roster, that exactly one of `text` and `batch` is given, that pixels are 28x28, or that a V2
# tensor's data agrees with its shape, so schema-valid bodies are rightly refused with 4xx.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
# A body that is invalid and also over a size limit may be refused for its size first (413).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

[dictionaries]
models = {{ values = {models} }}
versions = {{ values = {versions} }}
guests = {{ values = {guests} }}

# Half the generated names, versions and guests are real, so the fuzzer gets past 404 and the
# roster check into the models; the other half stay random.
[parameters]
"path.name" = {{ dictionary = "models", probability = 0.5 }}
"path.version" = {{ dictionary = "versions", probability = 0.5 }}
"body.guests[*]" = {{ dictionary = "guests", probability = 0.5 }}
"body.batch[*].guests[*]" = {{ dictionary = "guests", probability = 0.5 }}
"""


def _write_config(folder: Path) -> Path:
    """The schemathesis config, with the names, versions and guest roster of the repository."""
    versions = sorted({p.name for p in MODELS_DIR.glob("*/*") if p.name.isdigit()})
    wine_card = max(MODELS_DIR.glob("wine/*/card.json"), key=lambda p: int(p.parent.name))
    roster = json.loads(wine_card.read_text())["preprocessing"]["roster"]
    models = sorted(p.name for p in MODELS_DIR.iterdir() if p.is_dir())
    path = folder / "schemathesis.toml"
    path.write_text(
        CONFIG.format(models=json.dumps(models), versions=json.dumps(versions), guests=json.dumps(roster))
    )
    return path


def _operations_with_inputs(server: Server) -> set[str]:
    """'METHOD /path' of each documented operation that takes parameters or a body: the ones
    with something to generate (an operation without inputs has a handful of distinct cases)."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    return {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("parameters") or operation.get("requestBody")
    }


def _tally(report_dir: Path) -> tuple[dict[str, int], collections.Counter[int]]:
    """Cases generated per operation and the statuses answered, from the NDJSON event report."""
    cases: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()
    (report,) = report_dir.glob("*.ndjson")
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if not finished or "cases" not in finished["recorder"]:
            continue
        recorder = finished["recorder"]
        cases[recorder["label"]] += len(recorder["cases"])
        statuses.update(
            i["response"]["status_code"] for i in recorder["interactions"].values() if i.get("response")
        )
    return cases, statuses


RUNS: dict[str, tuple[dict[str, str], list[str], str]] = {
    # No key configured: predictions are open and the admin operations answer 403 (documented),
    # so the fuzzer exercises everything without unloading the models it is testing.
    "all operations, no key": ({}, [], "^/"),
    # A key configured and given: the admin operations load and unload for real, fed hostile
    # model names (path traversal, control characters, ...).
    "repository admin, with key": (
        {"NNSERVE_ADMIN_KEYS": API_KEY},
        ["-H", f"Authorization: Bearer {API_KEY}"],
        "^/v2/repository/",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_no_generated_request_breaks_the_service_or_its_contract(
    start_server: StartServer, tmp_path: Path, run: str
) -> None:
    schemathesis = require_tool("st", str(Path(sys.executable).parent / "st"))
    env, args, paths = RUNS[run]
    server = start_server(NNSERVE_LOG_LEVEL="warning", **env)
    report_dir = tmp_path / "report"
    result = subprocess.run(
        [
            schemathesis,
            "--config-file",
            str(_write_config(tmp_path)),
            "run",
            f"{server.url}/openapi.json",
            *CHECKS,
            "--mode",
            "all",
            "--max-examples",
            str(MIN_CASES),
            "--seed",
            "20261124",
            "--max-response-time",
            "5",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--report",
            "ndjson",
            "--report-dir",
            str(report_dir),
            "--no-color",
            "--include-path-regex",
            paths,
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    cases, statuses = _tally(report_dir)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    print(
        f"\nschemathesis ({run}): {sum(cases.values())} cases over {tested.group(1) if tested else '?'} "
        f"operations; statuses {dict(sorted(statuses.items()))}; cases per operation:"
    )
    for label, count in sorted(cases.items()):
        print(f"  {count:5d}  {label}")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Server error" not in result.stdout and max(statuses) < 500
    fuzzed = {label for label in _operations_with_inputs(server) if re.match(paths, label.split()[1])}
    short = {label: cases[label] for label in fuzzed if cases[label] < MIN_CASES}
    assert fuzzed and not short, f"operations given fewer than {MIN_CASES} cases: {short}"
    assert server.process.poll() is None and "Traceback" not in server.log()


# ----------------------------------------------------------------------------- by hand

JSON = {"Content-Type": "application/json"}
NESTED_10K = b'{"text": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
INFERENCE_PATHS = ["/predict/wine", "/predict/spam", "/predict/digit", "/v2/models/spam/infer"]


@pytest.mark.parametrize("path", INFERENCE_PATHS)
@pytest.mark.parametrize(
    "body",
    [
        NESTED_10K,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"text": "\xff\xfe\xc3(not utf-8)"}',
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "raw \x00 control"}',
        b'{"text": ' + b"9" * 5_000 + b"}",
        b"",
    ],
    ids=[
        "array-10k-deep",
        "object-10k-deep",
        "not-utf8",
        "lone-surrogate",
        "raw-nul",
        "5000-digit-number",
        "empty",
    ],
)
def test_hostile_json_is_a_4xx_never_a_crash(client: httpx.Client, path: str, body: bytes) -> None:
    """pydantic-core stops at its recursion limit and refuses bad UTF-8 and lone surrogates;
    whatever the layer, the answer is a 4xx in the one error shape."""
    response = client.post(path, content=body, headers=JSON)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert isinstance(response.json()["error"], str)


def test_control_characters_and_surrogates_in_email_text(client: httpx.Client) -> None:
    """Text that is valid JSON but odd as an email (NULs, escape sequences, a right-to-left
    override, an emoji as a surrogate pair, Unicode line separators) is text: it is classified,
    escaped or raw UTF-8, alone or in a batch. A lone surrogate is not valid Unicode: refused."""
    odd = "Subject: \x00hi\x01\x1b[31m\x7f\u202e\U0001f600\r\n\r\nwin \x00 cash\x85now\u2028"
    for ascii_only in (True, False):
        for body in ({"text": odd}, {"batch": [{"text": odd}] * 3}):
            content = json.dumps(body, ensure_ascii=ascii_only).encode()
            response = client.post("/predict/spam", content=content, headers=JSON)
            assert response.status_code == 200, response.text
    for content in (b'{"text": "\\udfff"}', b'{"batch": [{"text": "ok"}, {"text": "a\\ud800"}]}'):
        response = client.post("/predict/spam", content=content, headers=JSON)
        assert 400 <= response.status_code < 500, response.text


def test_every_text_field_is_length_limited(start_server: StartServer) -> None:
    """Under the body limit, each text field still has its own: the email text, a guest's name,
    the base64 image and the request id header."""
    server = start_server(NNSERVE_MAX_EMAIL_CHARS="1000", NNSERVE_MAX_IMAGE_BYTES="1024")
    with server.client() as http:
        email = http.post("/predict/spam", json={"text": "spam " * 201})
        assert email.status_code == 422 and "limit is 1000" in email.json()["error"]
        assert http.post("/predict/spam", json={"text": "spam " * 199}).status_code == 200
        guest = http.post("/predict/wine", json={"guests": ["G" * 65]})
        assert guest.status_code == 422, guest.text
        image = http.post("/predict/digit", json={"image": "A" * 4096})
        assert image.status_code == 413, image.text
        request_id = "r" * 10_000
        echoed = http.get("/health", headers={"X-Request-ID": request_id}).headers["X-Request-ID"]
        assert echoed != request_id and len(echoed) <= 128


def test_many_validation_errors_make_a_bounded_answer(client: httpx.Client) -> None:
    """A body of 60,000 unknown keys is one 422 that lists the first errors, not one entry per
    key: the answer is smaller than the request, so errors cannot amplify traffic."""
    body = b"{" + b",".join(b'"k%d":1' % i for i in range(60_000)) + b"}"
    response = client.post("/predict/wine", content=body, headers=JSON)
    print(f"\n60,000 unknown keys: a {len(body)} byte body, a {len(response.content)} byte 422")
    assert response.status_code == 422 and response.json()["error"].startswith("k0:")
    assert len(response.content) < len(body) // 10

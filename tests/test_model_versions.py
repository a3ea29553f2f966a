"""A client pins a model version: both protocols find it by one rule, and a version that names no
folder is the same 404 on /predict/* and on /v2/*, whatever the string."""

from __future__ import annotations

import httpx
import pytest

WINE = {"guests": ["Dahlia", "Stiffy"]}
TENSOR = {"inputs": [{"name": "guests", "shape": [1, 10], "datatype": "FP32", "data": [0, 1, 1] + [0] * 7}]}
NOT_VERSIONS = ["abc", "0", "-1", "1.0", "²", "9" * 5000, "999999999"]


def test_a_pinned_version_answers_on_both_protocols(client: httpx.Client) -> None:
    predicted = client.post("/predict/wine?version=1", json=WINE).json()
    inferred = client.post("/v2/models/wine/versions/1/infer", json=TENSOR).json()
    assert predicted["model"] == {"name": "wine", "version": 1} and inferred["model_version"] == "1"
    assert inferred["outputs"][0]["data"][0] == pytest.approx(predicted["bottles"], abs=1e-4)


@pytest.mark.parametrize("version", NOT_VERSIONS, ids=lambda v: v[:12])
def test_a_version_that_names_no_folder_is_404_on_both_protocols(client: httpx.Client, version: str) -> None:
    answers = [
        client.post("/predict/wine", params={"version": version}, json=WINE),
        client.post(f"/v2/models/wine/versions/{version}/infer", json=TENSOR),
        client.get(f"/v2/models/wine/versions/{version}"),
        client.get(f"/v2/models/wine/versions/{version}/ready"),
    ]
    for answer in answers:
        assert answer.status_code == 404, (answer.request.url, answer.text[:200])
        assert answer.json()["code"] == "model_not_found"
        assert len(answer.text) < 300, "the answer echoes a bounded part of the version only"


def test_an_unknown_model_is_the_same_404_everywhere(client: httpx.Client) -> None:
    for answer in (
        client.post("/v2/models/cat/infer", json=TENSOR),
        client.get("/v2/models/cat"),
        client.get("/models/cat"),
    ):
        assert answer.status_code == 404 and answer.json() == {
            "error": "no model named 'cat'",
            "code": "model_not_found",
        }

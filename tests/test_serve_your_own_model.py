"""A user drops their own ONNX file into the repository, with no card or a small one, and serves
it over the Open Inference Protocol: the tensors come from the graph, the answers are
onnxruntime's own, bad inputs are refused before inference, and a model that cannot be served is
reported with its reason while the others serve on."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from dropin_models import CHURN_FEATURES, IMAGE_SIDE, cat_graph, churn_graph, save, text_graph, v2_request
from prometheus_client.parser import text_string_to_metric_families

from support.inprocess import MakeClient
from support.server import StartServer

CAT_CARD = {
    "description": "Is there a cat in this 32x32 RGB photo? Any size works.",
    "labels": ["not a cat", "cat"],
    "example": v2_request("image", np.zeros((1, 3, 8, 8), np.float32)),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """churn v1 and cat v1 with no card; cat v2 takes any image size and has a small card; a
    drop-in named like a domain route (wine)."""
    root = tmp_path_factory.mktemp("dropin") / "models"
    save(churn_graph(), root / "churn" / "1")
    save(churn_graph(), root / "wine" / "1")
    save(cat_graph(), root / "cat" / "1")
    save(cat_graph(seed=2, dynamic_side=True), root / "cat" / "2", CAT_CARD)
    return root


@pytest.fixture(scope="module")
def http(make_client: MakeClient, models: Path) -> httpx.Client:
    return make_client(models_dir=models)


def _onnxruntime(path: Path, name: str, tensor: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output: np.ndarray = session.run(None, {name: tensor})[0]
    return output


INPUTS = {
    "churn": ("customer", (16, CHURN_FEATURES)),
    "cat": ("image", (4, 3, IMAGE_SIDE, IMAGE_SIDE)),
}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_a_dropped_in_network_answers_as_onnxruntime_does(
    http: httpx.Client, models: Path, name: str
) -> None:
    input_name, shape = INPUTS[name]
    tensor = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    answer = http.post(f"/v2/models/{name}/versions/1/infer", json=v2_request(input_name, tensor))
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    served = np.asarray(output["data"], np.float32).reshape(output["shape"])
    direct = _onnxruntime(models / name / "1" / "model.onnx", input_name, tensor)
    difference = float(np.abs(served - direct).max())
    print(f"\n{name}: {shape[0]} rows, served vs onnxruntime max abs difference {difference:.3g}")
    assert served.shape == direct.shape == (shape[0], 1)
    assert difference <= 1e-6
    assert 0 < direct.min() and direct.max() < 1  # a sigmoid that says something, not a constant


def test_metadata_comes_from_the_graph_and_says_there_is_no_card(http: httpx.Client) -> None:
    metadata = http.get("/v2/models/churn").json()
    assert metadata["inputs"] == [{"name": "customer", "datatype": "FP32", "shape": [-1, CHURN_FEATURES]}]
    assert metadata["outputs"] == [{"name": "churn", "datatype": "FP32", "shape": [-1, 1]}]
    assert metadata["parameters"] == {"card": "none"}
    (version,) = http.get("/models/churn").json()["versions"]
    assert version["ready"] and version["card"] == "none" and version["task"] is None
    assert version["inputs"] == [{"name": "customer", "dtype": "float32", "shape": [-1, CHURN_FEATURES]}]


def test_a_small_card_adds_what_the_graph_cannot_say(http: httpx.Client) -> None:
    metadata = http.get("/v2/models/cat").json()  # v2, the highest
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert metadata["parameters"] == {
        "card": "small",
        "description": CAT_CARD["description"],
        "labels": CAT_CARD["labels"],
    }
    v2 = http.get("/models/cat").json()["versions"][1]
    assert (
        v2["card"] == "small" and v2["labels"] == CAT_CARD["labels"] and v2["example"] == CAT_CARD["example"]
    )
    example = http.post("/v2/models/cat/infer", json=CAT_CARD["example"])
    assert example.status_code == 200 and example.json()["model_version"] == "2"
    bigger = v2_request("image", np.ones((2, 3, 64, 48), np.float32))
    assert http.post("/v2/models/cat/infer", json=bigger).json()["outputs"][0]["shape"] == [2, 1]


def _customer(rows: int = 1, width: int = CHURN_FEATURES) -> dict[str, Any]:
    return v2_request("customer", np.zeros((rows, width), np.float32))


@pytest.mark.parametrize(
    ("what", "body", "message"),
    [
        ("too few features", _customer(width=10), "has shape [1, 10]; the model takes [-1, 11]"),
        ("wrong rank", v2_request("customer", np.zeros(11, np.float32)), "has shape [11]"),
        ("wrong datatype", {"inputs": [{**_customer()["inputs"][0], "datatype": "FP64"}]}, "must be FP32"),
        ("unknown input", v2_request("client", np.zeros((1, 11), np.float32)), "unknown input(s) ['client']"),
        ("no inputs", {"inputs": []}, "missing input 'customer'"),
        ("a string", {"inputs": [{**_customer()["inputs"][0], "data": ["1"] * 11}]}, "does not hold FP32"),
    ],
)
def test_inputs_are_checked_against_the_graph_before_inference(
    http: httpx.Client, what: str, body: dict[str, Any], message: str
) -> None:
    refused = http.post("/v2/models/churn/infer", json=body)
    assert refused.status_code == 400, what
    assert message in refused.json()["error"], refused.json()


def test_the_typed_routes_are_for_models_with_a_training_card(http: httpx.Client) -> None:
    """A drop-in named like a domain route has no card saying how to prepare a guest list: the
    route says so and points to V2, which serves it."""
    refused = http.post("/predict/wine", json={"guests": []})
    assert refused.status_code == 503
    assert (
        refused.json()["error"]
        == "wine v1 is a drop-in model without a training card: use /v2/models/wine/infer"
    )
    assert http.post("/v2/models/wine/infer", json=_customer()).status_code == 200


BROKEN = {
    "strings/1": "tensor 'text' has unsupported type tensor(string)",
    "big/1": "model.onnx is 40,8",  # bytes, over the limit of 10,000 (NNSERVE_MAX_MODEL_BYTES)
    "torn/1": "Protobuf parsing failed",
    "anysize/1": "warm-up on zeros of shapes [[1, 3, 1, 1]] failed",
    "labelled/1": "card.json names 3 labels; output 'churn' of shape [-1, 1] needs 2",
    "typo/1": "card.json: descripton: Extra inputs are not permitted",
    "unparsed/1": "the card's example request is refused: input 'customer': data does not hold FP32 values",
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """churn serves; every other model is broken one way."""
    root = tmp_path_factory.mktemp("broken") / "models"
    save(churn_graph(), root / "churn" / "1")
    save(text_graph(), root / "strings" / "1")
    save(churn_graph(padding=10_000), root / "big" / "1")
    torn = save(churn_graph(), root / "torn" / "1")
    torn.write_bytes(torn.read_bytes()[:300])
    save(cat_graph(dynamic_side=True), root / "anysize" / "1")
    save(churn_graph(), root / "labelled" / "1", {"labels": ["stays", "leaves", "unsure"]})
    save(churn_graph(), root / "typo" / "1", {"descripton": "misspelt"})
    example = {
        "inputs": [{"name": "customer", "shape": [1, 11], "datatype": "FP32", "data": {"not": "a list"}}]
    }
    save(churn_graph(), root / "unparsed" / "1", {"example": example})
    return root


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "not strict"])
def test_models_that_cannot_serve_are_reported_and_the_others_serve(
    make_client: MakeClient, broken: Path, strict: bool
) -> None:
    http = make_client(models_dir=broken, max_model_bytes=10_000, strict_readiness=strict)
    ready = http.get("/ready")
    states = ready.json()["models"]
    print(f"\n/ready {ready.status_code}: {json.dumps(states, indent=1)}")
    assert states["churn/1"] == "ready"
    for version, reason in BROKEN.items():
        assert reason in states[version], version
    assert ready.status_code == (503 if strict else 200)
    assert http.get("/v2/health/ready").status_code == (503 if strict else 200)
    listed = {m["name"]: m["versions"][0] for m in http.get("/models").json()}
    assert not listed["big"]["ready"] and BROKEN["big/1"] in listed["big"]["error"]
    assert listed["anysize"]["inputs"][0]["shape"] == [-1, 3, -1, -1]  # what the graph said
    assert http.post("/v2/models/churn/infer", json=_customer()).status_code == 200
    refused = http.post("/v2/models/big/infer", json=_customer())
    assert refused.status_code == 503 and "NNSERVE_MAX_MODEL_BYTES" in refused.json()["error"]


@pytest.mark.smoke
def test_a_real_server_serves_a_dropped_in_model(start_server: StartServer, models: Path) -> None:
    server = start_server(NNSERVE_MODELS_DIR=str(models))
    tensor = np.random.default_rng(3).standard_normal((2, CHURN_FEATURES)).astype(np.float32)
    with server.client() as http:
        answer = http.post("/v2/models/churn/infer", json=v2_request("customer", tensor)).json()
    served = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(2, 1)
    np.testing.assert_array_equal(
        served, _onnxruntime(models / "churn" / "1" / "model.onnx", "customer", tensor)
    )


def _calls(http: httpx.Client, model: str) -> dict[str, float]:
    """The model's onnxruntime calls so far, the rows they took, and the calls of at most 4 rows
    (nnserve_batch_size)."""
    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for sample in family.samples
        if sample.name.startswith("nnserve_batch_size") and sample.labels.get("model") == model
    }
    return {
        "calls": samples.get(("nnserve_batch_size_count", None), 0),
        "rows": samples.get(("nnserve_batch_size_sum", None), 0),
        "up to 4 rows": samples.get(("nnserve_batch_size_bucket", "4.0"), 0),
    }


@pytest.mark.parametrize("with_example", [False, True], ids=["graph alone", "card with its example"])
def test_a_graph_with_a_fixed_batch_takes_exactly_that_many_rows(
    make_client: MakeClient, tmp_path: Path, with_example: bool
) -> None:
    """Exported with batch 4 fixed: requests of 4 rows each are served even when they arrive
    together (never stacked into one call of 8), and any other row count is a 400. A small
    card's example request of 4 rows is its warm-up. The same burst to the same graph with its
    batch free shows that the requests did arrive together: it is stacked into larger calls."""
    graph = churn_graph()
    save(graph, tmp_path / "flexible" / "1")
    for tensor in (*graph.input, *graph.output):
        batch = tensor.type.tensor_type.shape.dim[0]
        batch.ClearField("dim_param")
        batch.dim_value = 4
    four = v2_request("customer", np.ones((4, CHURN_FEATURES), np.float32))
    save(graph, tmp_path / "fixed" / "1", {"example": four} if with_example else None)
    http = make_client(models_dir=tmp_path)
    assert http.get("/v2/models/fixed").json()["inputs"][0]["shape"] == [4, CHURN_FEATURES]

    def burst(model: str) -> dict[str, float]:
        """64 requests of 4 rows from 8 threads; the model's calls and the rows they took."""
        before = _calls(http, model)
        with ThreadPoolExecutor(8) as pool:
            statuses = pool.map(
                lambda _: http.post(f"/v2/models/{model}/infer", json=four).status_code, range(64)
            )
        assert set(statuses) == {200}
        return {what: value - before[what] for what, value in _calls(http, model).items()}

    flexible, fixed = burst("flexible"), burst("fixed")
    assert flexible["rows"] == fixed["rows"] == 64 * 4
    assert flexible["up to 4 rows"] < flexible["calls"], "no two requests arrived together"
    assert fixed["up to 4 rows"] == fixed["calls"] == 64
    one = http.post("/v2/models/fixed/infer", json=_customer())
    assert one.status_code == 400 and "the model takes [4, 11]" in one.json()["error"]

"""No train/serve skew, for every committed version of every model: the service answers held-out
inputs exactly as the training pipeline's ONNX evaluation did (samples.json, written by training
when it exported the model), and a spam verdict follows the version's own threshold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from samples import Sample, samples, versions

from service.card import ModelCard, TokenIdVocabulary
from service.features import TokenIds
from service.features.spam import TextKind
from service.models.loading import spam_encoder

from support.server import MODELS_DIR

PARITY_ITEMS = 200
EVERY_VERSION = [(name, version) for name in ("wine", "spam", "digit") for version in versions(name)]


def _served(
    client: httpx.Client, name: str, version: int, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    predictions: list[dict[str, Any]] = []
    for start in range(0, len(items), 50):
        response = client.post(
            f"/predict/{name}", params={"version": version}, json={"batch": items[start : start + 50]}
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == {"name": name, "version": version}
        predictions += response.json()["predictions"]
    return predictions


def _card_thresholds(version: int, held_out: Sequence[Sample]) -> np.ndarray:
    """Each sample's threshold as the version's card gives it: its kind's (spam v3 on; the kind
    training recorded in samples.json from v4, so a service that misjudged a text's kind fails
    here), else the card's one, else 0.5."""
    card = ModelCard.read(MODELS_DIR / "spam" / str(version))
    encoder = spam_encoder(card)

    def kind(sample: Sample) -> TextKind:
        recorded = sample.kind or encoder.kind(encoder.encode(sample.input["text"]))
        return "email" if recorded == "email" else "text"

    return np.array([card.decision_threshold(kind=kind(sample)) for sample in held_out])


@pytest.mark.parametrize(("name", "version"), EVERY_VERSION, ids=[f"{n}-v{v}" for n, v in EVERY_VERSION])
def test_served_answers_equal_the_training_pipeline(client: httpx.Client, name: str, version: int) -> None:
    held_out = samples(name, version)[:PARITY_ITEMS]
    assert len(held_out) == PARITY_ITEMS
    served = _served(client, name, version, [s.input for s in held_out])
    expected = np.array([s.output for s in held_out])
    if name == "wine":
        got = np.array([[p["bottles"]] for p in served])
        np.testing.assert_allclose(got, expected, atol=1e-4)  # bottles are rounded to 4 places
    elif name == "spam":
        got = np.array([p["probability"] for p in served])
        np.testing.assert_allclose(got, expected[:, 1], atol=1e-6)
        assert [p["spam"] for p in served] == (expected[:, 1] >= _card_thresholds(version, held_out)).tolist()
    else:
        got = np.array([p["probabilities"] for p in served])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert [p["digit"] for p in served] == expected.argmax(axis=1).tolist()


def _dense_twin(sparse: onnx.ModelProto) -> onnx.ModelProto:
    """The same network on a dense bag of words: the embedding bag (Gather of the weight matrix's
    rows, times their weights, summed) replaced by one MatMul of the bag with that matrix, every
    other node and every weight as they are."""
    nodes = list(sparse.graph.node)
    gather = next(n for n in nodes if n.op_type == "Gather")
    reduce = next(n for n in nodes if n.op_type == "ReduceSum")
    matrix = next(i for i in sparse.graph.initializer if i.name == gather.input[0])
    first, last = nodes.index(gather), nodes.index(reduce)
    kept = nodes[:first] + nodes[last + 1 :]
    assert not any(n.op_type in ("Gather", "ReduceSum") for n in kept)
    bag = onnx.helper.make_tensor_value_info(
        "bag_of_words", onnx.TensorProto.FLOAT, ["batch", matrix.dims[0]]
    )
    matmul = onnx.helper.make_node("MatMul", ["bag_of_words", matrix.name], [reduce.output[0]])
    graph = onnx.helper.make_graph(
        [matmul, *(n for n in kept if n.op_type != "Unsqueeze")],
        "dense_twin",
        [bag],
        list(sparse.graph.output),
        list(sparse.graph.initializer),
    )
    return onnx.helper.make_model(graph, opset_imports=sparse.opset_import)


SPARSE_VERSIONS = [
    v
    for v in versions("spam")
    if ModelCard.read(MODELS_DIR / "spam" / str(v)).preprocessing.kind == "token_ids"
]


@pytest.mark.parametrize("version", SPARSE_VERSIONS, ids=[f"spam-v{v}" for v in SPARSE_VERSIONS])
def test_the_sparse_graph_equals_the_dense_formulation_on_the_same_weights(version: int) -> None:
    folder = MODELS_DIR / "spam" / str(version)
    card = ModelCard.read(folder)
    assert isinstance(card.preprocessing, TokenIdVocabulary)
    sparse_encoder = spam_encoder(card)
    assert isinstance(sparse_encoder, TokenIds)
    texts = [s.input["text"] for s in samples("spam", version)[:PARITY_ITEMS]]
    sparse = ort.InferenceSession(str(folder / "model.onnx"))
    twin = _dense_twin(onnx.load(str(folder / "model.onnx")))
    assert "Gather" not in {n.op_type for n in twin.graph.node}
    dense = ort.InferenceSession(twin.SerializeToString())
    for text in texts:
        ids = sparse_encoder.encode(text)
        by_ids = sparse.run(None, sparse_encoder.feeds([ids]))[0]
        # The dense bag: each id's weight at its place (1 for a word; spam v4's pieces less).
        bag = np.zeros((1, sparse_encoder.size), dtype=np.float32)
        bag[0, ids] = sparse_encoder.weights(ids)
        by_bag = dense.run(None, {"bag_of_words": bag})[0]
        np.testing.assert_allclose(by_ids, by_bag, atol=1e-6)

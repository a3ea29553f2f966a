"""A host asks why the wine network predicts so many bottles: each guest's effect, and the hidden
units that carried the answer, with what each one means."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from samples import latest_version

from training.explain import derive_committed
from training.export import write_model
from training.fit import FitConfig
from training.recipes import train_wine

from support.inprocess import MakeClient, loaded_version
from support.server import MODELS_DIR

ROSTER = ["Agatha", "Dahlia", "Stiffy", "Bertie", "Bingo", "Gussie", "Spode", "Madeline", "Watkyn", "Tuppy"]
WINE = MODELS_DIR / "wine" / str(latest_version("wine"))
PARTIES = [
    [],
    ["Dahlia", "Stiffy"],
    ["Agatha", "Dahlia", "Stiffy"],
    ["Dahlia", "Stiffy", "Bertie", "Tuppy"],
    ["Bertie", "Bingo", "Spode", "Madeline", "Watkyn"],
    ROSTER,
]


def _explain(client: httpx.Client, guests: list[str], **params: str) -> dict[str, Any]:
    response = client.post("/explain/wine", json={"guests": guests}, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _bottles(client: httpx.Client, guests: list[str]) -> float:
    bottles: float = client.post("/predict/wine", json={"guests": guests}).json()["bottles"]
    return bottles


def _layers() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The served network's weights, read from model.onnx itself: W1 [32, 10], b1, w2 [32], b2."""
    weights = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(WINE / "model.onnx")).graph.initializer
    }
    (w1, b1), (w2, b2) = [
        (weights[n], weights[n.replace("weight", "bias")]) for n in sorted(weights) if n.endswith("weight")
    ]
    return w1, b1, w2[0], float(b2[0])


def _card_units() -> list[dict[str, Any]]:
    units: list[dict[str, Any]] = json.loads((WINE / "card.json").read_text())["hidden_units"]["units"]
    return units


@pytest.mark.parametrize("guests", PARTIES, ids=lambda g: "+".join(g) or "nobody")
def test_each_guests_effect_is_the_difference_of_two_predictions(
    client: httpx.Client, guests: list[str]
) -> None:
    body = _explain(client, guests)
    assert body["bottles"] == _bottles(client, guests)
    assert [g["guest"] for g in body["guests"]] == guests
    for effect in body["guests"]:
        without = [g for g in guests if g != effect["guest"]]
        assert effect["bottles_without"] == _bottles(client, without)
        assert effect["effect"] == pytest.approx(body["bottles"] - _bottles(client, without), abs=1e-9)


def test_agathas_effect_wipes_out_the_party(client: httpx.Client) -> None:
    body = _explain(client, ["Agatha", "Dahlia", "Stiffy"])
    effects = {g["guest"]: g["effect"] for g in body["guests"]}
    assert body["bottles"] == pytest.approx(0.0, abs=0.05)
    assert effects["Agatha"] == pytest.approx(-_bottles(client, ["Dahlia", "Stiffy"]), abs=0.05)
    assert effects["Agatha"] < -4
    assert abs(effects["Dahlia"]) < 0.05 and abs(effects["Stiffy"]) < 0.05  # nobody drinks anyway


def test_dahlias_effect_is_the_largest_positive(client: httpx.Client) -> None:
    body = _explain(client, ["Dahlia", "Stiffy", "Bertie", "Tuppy"])
    effects = {g["guest"]: g["effect"] for g in body["guests"]}
    assert max(effects, key=effects.__getitem__) == "Dahlia"
    assert all(effect > 0 for effect in effects.values())


@pytest.mark.parametrize("guests", PARTIES[1:4], ids=lambda g: "+".join(g))
def test_hidden_activations_are_the_networks_hidden_layer(client: httpx.Client, guests: list[str]) -> None:
    w1, b1, w2, b2 = _layers()
    party = np.isin(ROSTER, guests).astype(np.float32)
    expected = np.maximum(w1 @ party + b1, 0)
    hidden = _explain(client, guests)["hidden"]
    assert hidden["available"] is True
    got = np.array([unit["activation"] for unit in hidden["units"]])
    assert got == pytest.approx(expected, abs=1e-4)
    assert [unit["active"] for unit in hidden["units"]] == (expected > 0).tolist()
    contributions = sum(unit["contribution"] for unit in hidden["units"])
    assert hidden["output_bias"] == pytest.approx(b2, abs=1e-4)
    assert max(0.0, contributions + hidden["output_bias"]) == pytest.approx(
        _bottles(client, guests), abs=3e-3
    )


def test_unit_meanings_on_the_card_match_the_network() -> None:
    """Recomputed here from model.onnx's weights over every possible party: each unit's named
    guests move it the way the card says and more than any guest it does not name, and its
    weight into the output is the network's."""
    w1, b1, w2, _ = _layers()
    parties = np.array(list(itertools.product([0.0, 1.0], repeat=len(ROSTER))), dtype=np.float32)
    activations = np.maximum(parties @ w1.T + b1, 0)
    units = _card_units()
    assert [u["unit"] for u in units] == list(range(len(w2)))
    for unit, weight, column in zip(units, w2, activations.T, strict=True):
        effects = {
            g: column[parties[:, i] == 1].mean() - column[parties[:, i] == 0].mean()
            for i, g in enumerate(ROSTER)
        }
        named = unit["on_when"] + unit["off_when"]
        assert named, unit
        assert all(effects[g] > 0 for g in unit["on_when"]) and all(effects[g] < 0 for g in unit["off_when"])
        strongest = max(ROSTER, key=lambda g: abs(effects[g]))
        assert strongest in named, (unit, effects)
        unnamed = [abs(effects[g]) for g in ROSTER if g not in named]
        assert min(abs(effects[g]) for g in named) >= max(unnamed, default=0.0)
        assert unit["weight_out"] == pytest.approx(float(weight), abs=1e-6)
        assert unit["active_share"] == pytest.approx(float((column > 0).mean()))
        verb = "adds" if weight >= 0 else "takes away"
        assert unit["meaning"].endswith(f"{verb} {abs(weight):.2f} bottles per unit")
        assert all(g in unit["meaning"] for g in named)


def test_the_agatha_unit_is_lit_when_she_comes(client: httpx.Client) -> None:
    """The story's "Agatha neuron": a unit turned on by Agatha alone that takes bottles away."""
    agatha = [
        u["unit"]
        for u in _card_units()
        if u["on_when"] == ["Agatha"] and not u["off_when"] and u["weight_out"] < 0
    ]
    assert agatha
    with_her = _explain(client, ["Agatha", "Dahlia", "Stiffy"])["hidden"]["units"]
    without_her = _explain(client, ["Dahlia", "Stiffy"])["hidden"]["units"]
    assert all(with_her[u]["activation"] > without_her[u]["activation"] for u in agatha)
    assert sum(with_her[u]["contribution"] for u in agatha) < -1


def test_the_answer_carries_the_cards_meanings(client: httpx.Client) -> None:
    units = _explain(client, ["Dahlia"])["hidden"]["units"]
    assert [(u["meaning"], u["weight_out"]) for u in units] == [
        (c["meaning"], round(c["weight_out"], 4)) for c in _card_units()
    ]


def _wine_repository(tmp_path: Path, hidden: bytes | None) -> Path:
    """A repository holding the committed wine version, its hidden.onnx removed or replaced."""
    folder = tmp_path / "wine" / WINE.name
    shutil.copytree(WINE, folder)
    (folder / "hidden.onnx").unlink()
    if hidden is not None:
        (folder / "hidden.onnx").write_bytes(hidden)
    return tmp_path


@pytest.mark.parametrize(
    ("hidden", "reason"),
    [(None, "ships no hidden.onnx"), (b"not an onnx graph", "hidden.onnx did not load")],
    ids=["missing", "corrupt"],
)
def test_without_a_usable_hidden_graph_the_effects_still_come_and_the_answer_says_why(
    make_client: MakeClient, tmp_path: Path, hidden: bytes | None, reason: str
) -> None:
    client = make_client(models_dir=_wine_repository(tmp_path, hidden))
    assert client.get("/ready").status_code == 200
    body = _explain(client, ["Dahlia", "Stiffy"])
    assert body["hidden"]["available"] is False and body["hidden"]["units"] == []
    assert reason in body["hidden"]["reason"]
    assert str(tmp_path) not in body["hidden"]["reason"]
    assert body["guests"][0]["effect"] == pytest.approx(2.8, abs=0.2)


def test_a_pinned_version_explains_and_an_unknown_one_is_404(client: httpx.Client) -> None:
    assert _explain(client, ["Dahlia"], version=WINE.name)["model"]["version"] == int(WINE.name)
    response = client.post("/explain/wine", json={"guests": []}, params={"version": "999"})
    assert response.status_code == 404 and response.json()["code"] == "model_not_found"


def test_an_unknown_guest_is_refused_with_the_known_guests(client: httpx.Client) -> None:
    response = client.post("/explain/wine", json={"guests": ["Dahlia", "Jeeves"]})
    assert response.status_code == 422
    assert response.json()["details"] == {"loc": "guests", "unknown": ["Jeeves"], "known_guests": ROSTER}


def test_a_batch_is_refused_with_a_clear_422(client: httpx.Client) -> None:
    response = client.post("/explain/wine", json={"batch": [{"guests": ["Dahlia"]}]})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input" and body["details"] == {"loc": "batch"}
    assert "one item" in body["error"] and "/predict/wine" in body["error"]


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"guests": []}', {"Content-Type": "text/plain"}, 415),
        (b'{"guests": "Dahlia"}', {"Content-Type": "application/json"}, 422),
    ],
    ids=["not-json", "not-json-content-type", "guests-not-a-list"],
)
def test_bad_bodies_get_the_same_errors_as_predictions(
    client: httpx.Client, content: bytes, headers: dict[str, str], status: int
) -> None:
    explained = client.post("/explain/wine", content=content, headers=headers)
    predicted = client.post("/predict/wine", content=content, headers=headers)
    assert explained.status_code == predicted.status_code == status
    assert explained.json() == predicted.json()


def test_an_api_key_is_needed_when_keys_are_set(make_client: MakeClient) -> None:
    secured = make_client(api_keys=["explain-key"])
    assert secured.post("/explain/wine", json={"guests": []}).status_code == 401
    opened = secured.post(
        "/explain/wine", json={"guests": []}, headers={"Authorization": "Bearer explain-key"}
    )
    assert opened.status_code == 200


def test_the_committed_hidden_graph_and_meanings_are_derived_from_model_onnx(tmp_path: Path) -> None:
    """`python -m training.explain wine <v>` on a copy without them gives back what is committed."""
    folder = tmp_path / "wine" / WINE.name
    shutil.copytree(WINE, folder)
    (folder / "hidden.onnx").unlink()
    card = json.loads((folder / "card.json").read_text())
    committed = card.pop("hidden_units")
    (folder / "card.json").write_text(json.dumps(card))
    derive_committed(tmp_path, "wine", int(WINE.name))
    assert json.loads((folder / "card.json").read_text())["hidden_units"] == committed
    assert (folder / "hidden.onnx").read_bytes() == (WINE / "hidden.onnx").read_bytes()


@pytest.mark.slow  # trains and exports a net: test-all's, not the fast ring's
def test_a_newly_trained_wine_version_ships_its_hidden_layer(tmp_path: Path) -> None:
    """Export cuts hidden.onnx out of every new wine version, checks it against PyTorch and names
    the units; the service loads it."""
    trained = train_wine(FitConfig(epochs=1, learning_rate=0.01, batch_size=32, seed=0), 300, 100)
    folder = write_model(trained, tmp_path)
    section = json.loads((folder / "card.json").read_text())["hidden_units"]
    assert section["parity"]["against"] == "torch" and section["parity"]["max_abs_diff"] <= 1e-4
    assert len(section["units"]) == trained.training["hidden"]
    with loaded_version("wine", 1, folder) as loaded:
        assert loaded.serving is not None and loaded.serving.hidden is not None, loaded.error

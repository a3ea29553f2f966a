"""The wine recipe: synthetic dinner parties, a two-layer ReLU net, the story cases on the card."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from torch import nn

from service.card import GuestRoster, TensorSpec
from service.features import GuestEncoder
from training.explain import torch_hidden_graph
from training.export import Trained
from training.fit import FitConfig, fit, make_deterministic, predict
from training.nets import wine_net
from training.recipes.common import determinism, spread
from training.wine_party import ROSTER, STORY, bottles, generate_parties

WINE_TRAIN_SEED, WINE_TEST_SEED = 1, 2


def train_wine(
    config: FitConfig, train_parties: int = 20_000, test_parties: int = 4_000, hidden: int = 32
) -> Trained:
    _, x_train, y_train = generate_parties(WINE_TRAIN_SEED + config.seed, train_parties)
    test_guests, x_test, y_test = generate_parties(WINE_TEST_SEED + config.seed, test_parties)
    clean = np.array([bottles(g) for g in test_guests], dtype=np.float32)
    targets = y_train[:, np.newaxis]

    def build() -> nn.Module:
        return wine_net(len(ROSTER), hidden)

    make_deterministic(config.seed)
    net = build()

    def mae(model: nn.Module) -> float:
        return float(np.abs(predict(model, x_test)[:, 0] - y_test).mean())

    history = fit(net, x_train, targets, nn.MSELoss(), config, mae, "MAE", label="wine")
    predicted = predict(net, x_test)[:, 0]
    story = {
        " + ".join(party) or "nobody": round(float(predict(net, _vector([*party]))[0, 0]), 4)
        for party in STORY
    }
    slope = float((x_train.sum(1) * y_train).sum() / (x_train.sum(1) ** 2).sum())
    linear = slope * x_test.sum(1)
    return Trained(
        name="wine",
        net=net,
        input=TensorSpec(name="guests", dtype="float32", shape=[-1, len(ROSTER)]),
        output=TensorSpec(name="bottles", dtype="float32", shape=[-1, 1]),
        task="regression",
        preprocessing=GuestRoster(roster=ROSTER),
        x_test=x_test,
        metrics={
            "mae": float(np.abs(predicted - y_test).mean()),
            "mae_vs_noise_free_truth": float(np.abs(predicted - clean).mean()),
            "rmse": float(np.sqrt(((predicted - y_test) ** 2).mean())),
            "story": story,
            "story_max_error": max(abs(story[k] - v) for k, v in _story_by_label().items()),
        },
        baseline={
            "model": "bottles = A x number_of_guests (least squares on the training parties)",
            "A": slope,
            "mae": float(np.abs(linear - y_test).mean()),
            "rmse": float(np.sqrt(((linear - y_test) ** 2).mean())),
        },
        data={
            "source": "synthetic dinner parties (training/wine_party.py)",
            "label_noise_sigma": 0.03,
            "held_out": {"seed": WINE_TEST_SEED + config.seed, "parties": test_parties},
            "train": {"seed": WINE_TRAIN_SEED + config.seed, "parties": train_parties},
        },
        training={
            **asdict(config),
            "hidden": hidden,
            "loss": "mse",
            "determinism": determinism(build, x_train[:4000], targets[:4000], nn.MSELoss(), config, x_test),
        },
        history=history,
        samples=[
            {"input": {"guests": test_guests[i]}, "label": float(y_test[i]), "row": i}
            for i in spread(list(range(len(test_guests))))
        ],
        # The first dense layer and its ReLU (the same modules, so the same weights): export cuts
        # hidden.onnx out of model.onnx, checks it against this and names each hidden unit.
        derive=torch_hidden_graph(nn.Sequential(*list(net.children())[:2]), ROSTER),
        notes=[
            "Bottles of wine for a dinner party. Aunt Agatha stops everyone drinking, Aunt Dahlia "
            "makes everyone drink 2.6x, and when the Drones Club and Totleigh Towers both come the "
            "smaller faction leaves. A two-layer ReLU network learns it; `bottles = A x guests` "
            "cannot."
        ],
    )


def _vector(guests: list[str]) -> np.ndarray:
    return GuestEncoder(ROSTER).encode(guests)[np.newaxis]


def _story_by_label() -> dict[str, float]:
    return {" + ".join(party) or "nobody": value for party, value in STORY.items()}

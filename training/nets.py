"""The PyTorch networks. Each classifier ends in logits; export wraps it with a softmax so the
served graph outputs probabilities."""

from __future__ import annotations

import torch
from torch import nn


def wine_net(guests: int, hidden: int = 32) -> nn.Module:
    """Two layers of ReLU: the hidden layer learns the interactions (Agatha, Dahlia, the feud);
    ReLU on the output because a party never drinks negative bottles."""
    return nn.Sequential(nn.Linear(guests, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.ReLU())


def spam_net(vocabulary: int, dropout: float = 0.0) -> nn.Module:
    """Dropout (spam v2) keeps the net from leaning on a few words, which a short text may lack;
    it is the identity when exported, so the served graph is the same size either way."""
    return nn.Sequential(
        nn.Linear(vocabulary, 64),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(64, 2),
    )


def digit_mlp() -> nn.Module:
    """The seed's 784-128-64-10 MLP, kept as the baseline the CNN must beat."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def _conv(inputs: int, outputs: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]


def digit_cnn() -> nn.Module:
    """A small CNN with BatchNorm, sized for serving: about 2.5 M multiply-adds per digit, so
    onnxruntime answers in tens of microseconds while augmentation keeps it above 99.3%."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        *_conv(16, 32),
        nn.MaxPool2d(2),
        *_conv(32, 64),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 7 * 7, 128, bias=False),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, 10),
    )


class WithSoftmax(nn.Module):
    """What gets exported for a classifier: probabilities, not logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)

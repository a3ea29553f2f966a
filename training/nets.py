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


class SparseSpamNet(nn.Module):
    """spam_net with its first layer stored as an embedding bag (spam v3 on): the Dense layer's
    weight matrix, one row per vocabulary word, summed over the words present, each times its
    weight. That is the dense bag of words times the matrix, at a cost that grows with the words
    of the text rather than the vocabulary. Training feeds flat ids with offsets (nn.EmbeddingBag);
    the served graph takes them padded to [batch, tokens] (`padded`: Gather, Mul, ReduceSum)."""

    def __init__(self, vocabulary: int, dropout: float = 0.0, width: int = 64) -> None:
        super().__init__()
        self.first = nn.EmbeddingBag(vocabulary, width, mode="sum")
        self.bias = nn.Parameter(torch.empty(width))
        # nn.Linear(vocabulary, width)'s initialisation, so the net starts where spam_net does.
        bound = 1 / vocabulary**0.5
        nn.init.uniform_(self.first.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.rest = nn.Sequential(
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, 2),
        )

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.rest(self.first(ids, offsets, per_sample_weights=weights) + self.bias)
        return logits

    def padded(self, token_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(token_ids, self.first.weight)
        logits: torch.Tensor = self.rest((rows * weights.unsqueeze(-1)).sum(dim=1) + self.bias)
        return logits


class PaddedWithSoftmax(nn.Module):
    """What gets exported for SparseSpamNet: padded token ids and weights in, probabilities out."""

    def __init__(self, net: SparseSpamNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, token_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net.padded(token_ids, weights), dim=-1)


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

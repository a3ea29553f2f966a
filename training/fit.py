"""One training loop for all three networks: seeded, deterministic, with a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class FitConfig:
    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass
class History:
    """Per-epoch training loss and held-out score, for the card's training curve."""

    loss: list[float] = field(default_factory=list)
    held_out: list[float] = field(default_factory=list)
    held_out_name: str = ""
    seconds: float = 0.0


class SparseRows:
    """Rows of a sparse input (spam's token ids), stored flat: indexing a batch of rows gives the
    (ids, offsets, weights) an nn.EmbeddingBag takes, so no padded or dense copy is ever built."""

    def __init__(
        self, rows: Sequence[np.ndarray], weigh: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> None:
        """`weigh` gives ids their weights in the bag (the encoder's, as the served graph gets
        them); without it every id weighs 1."""
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.concatenate([*rows, np.zeros(0, dtype=np.int64)]).astype(np.int64)
        self.weigh = weigh

    def __len__(self) -> int:
        return len(self.starts) - 1

    def row(self, index: int) -> np.ndarray:
        return self.ids[self.starts[index] : self.starts[index + 1]]

    def __getitem__(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        picked = range(len(self))[index] if isinstance(index, slice) else index.tolist()
        rows = [self.row(i) for i in picked]
        lengths = [len(row) for row in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        flat = np.concatenate([*rows, np.zeros(0, dtype=np.int64)])
        weights = torch.from_numpy(self.weigh(flat)) if self.weigh else torch.ones(len(flat))
        return torch.from_numpy(flat), torch.from_numpy(offsets), weights


Inputs = np.ndarray | SparseRows


def _inputs(x: Inputs) -> torch.Tensor | SparseRows:
    return x if isinstance(x, SparseRows) else torch.from_numpy(x)


def _forward(net: nn.Module, batch: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    output: torch.Tensor = net(*batch) if isinstance(batch, tuple) else net(batch)
    return output


def make_deterministic(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def predict(net: nn.Module, x: Inputs, batch_size: int = 1024) -> np.ndarray:
    net.eval()
    inputs = _inputs(x)
    with torch.no_grad():
        return np.concatenate(
            [_forward(net, inputs[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        )


def fit(
    net: nn.Module,
    x: Inputs,
    y: np.ndarray,
    loss_fn: nn.Module,
    config: FitConfig,
    score: Callable[[nn.Module], float],
    score_name: str,
    augment: Augment | None = None,
    label: str = "",
    refresh: Callable[[int], np.ndarray] | None = None,
) -> History:
    """AdamW with a one-cycle learning rate; `score` evaluates the held-out split each epoch.

    `refresh(epoch)`, when given, replaces x (the first epoch's inputs) at the start of each later
    epoch with the same rows freshly augmented: augmentation too slow for every batch (numpy,
    Pillow) is then paid once an epoch. In line on purpose: run in a background thread, it made
    training slower here, not faster (the loop waits for the GIL at every torch call).
    """
    make_deterministic(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = (len(x) + config.batch_size - 1) // config.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps
    )
    inputs, targets = _inputs(x), torch.from_numpy(y)
    history = History(held_out_name=score_name)
    started = time.perf_counter()
    for epoch in range(config.epochs):
        if refresh is not None and epoch > 0:
            inputs = torch.from_numpy(refresh(epoch))
        net.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        bar = tqdm(
            range(steps), desc=f"{label} epoch {epoch + 1}/{config.epochs}", leave=False, mininterval=1
        )
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            xb = inputs[batch]
            if augment is not None and isinstance(xb, torch.Tensor):
                xb = augment(xb, generator)
            loss = loss_fn(_forward(net, xb), targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        history.loss.append(total / len(x))
        history.held_out.append(score(net))
        tqdm.write(
            f"{label} epoch {epoch + 1}/{config.epochs}: loss {history.loss[-1]:.4f}, "
            f"held-out {score_name} {history.held_out[-1]:.4f}"
        )
    history.seconds = time.perf_counter() - started
    return history


def random_affine(max_degrees: float, max_shift: float, scale: tuple[float, float]) -> Augment:
    """Random rotation, shift (a fraction of the image) and scale, per image, on a batch."""

    def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(images)
        angle = (torch.rand(n, generator=generator) * 2 - 1) * np.deg2rad(max_degrees)
        factor = torch.empty(n).uniform_(*scale, generator=generator)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * 2
        cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
        return nn.functional.grid_sample(images, grid, align_corners=False, padding_mode="zeros")

    return augment

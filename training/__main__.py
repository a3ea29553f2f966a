"""python -m training {wine,spam,digit,all}: train, evaluate, export and write a new version."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from training.export import Trained, write_model
from training.fit import FitConfig
from training.recipes import train_digit, train_spam, train_wine

DEFAULTS = {
    "wine": FitConfig(epochs=60, learning_rate=0.01, batch_size=256, seed=0),
    "spam": FitConfig(epochs=4, learning_rate=0.001, batch_size=64, weight_decay=1e-4, seed=0),
    "digit": FitConfig(epochs=30, learning_rate=0.004, batch_size=128, weight_decay=5e-4,
                       label_smoothing=0.05, seed=0),
    "digit-baseline": FitConfig(epochs=15, learning_rate=0.002, batch_size=128, seed=0),
}


def _config(name: str, args: argparse.Namespace) -> FitConfig:
    config = DEFAULTS[name]
    return FitConfig(
        epochs=args.epochs or config.epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        seed=args.seed,
    )


def train(name: str, args: argparse.Namespace) -> Trained:
    if name == "wine":
        return train_wine(_config("wine", args), **({"train_parties": args.limit} if args.limit else {}))
    if name == "spam":
        return train_spam(_config("spam", args), cache=args.cache)
    return train_digit(_config("digit", args), _config("digit-baseline", args), args.data_dir, args.cache)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("model", choices=["wine", "spam", "digit", "all"])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, help="folder of MNIST IDX files (digit only)")
    parser.add_argument("--cache", type=Path, help="npm data cache (default $NNSERVE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override every model's epoch count")
    parser.add_argument("--limit", type=int, help="wine: train on this many parties")
    args = parser.parse_args()
    for name in ["wine", "spam", "digit"] if args.model == "all" else [args.model]:
        started = time.perf_counter()
        trained = train(name, args)
        trained.training["seconds_total"] = round(time.perf_counter() - started, 1)
        folder = write_model(trained, args.models_dir)
        shown = {k: v for k, v in trained.metrics.items() if not isinstance(v, (dict, list))}
        print(f"{name}: wrote {folder} in {time.perf_counter() - started:.1f} s; metrics {shown}")


if __name__ == "__main__":
    main()

"""python -m training {wine,spam,digit,digit-int8,all}: train, evaluate, export and write a new
version (digit-int8: the newest float digit version quantised to int8, without retraining)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from training import samples
from training.data import DataError
from training.export import Trained, write_model
from training.fit import FitConfig
from training.recipes import quantise_digit, train_digit, train_spam, train_wine

DEFAULTS = {
    "wine": FitConfig(epochs=60, learning_rate=0.01, batch_size=256, seed=0),
    "spam": FitConfig(epochs=5, learning_rate=1e-3, batch_size=64, weight_decay=1e-4, seed=0),
    "digit": FitConfig(
        epochs=30, learning_rate=0.004, batch_size=128, weight_decay=5e-4, label_smoothing=0.05, seed=0
    ),
    "digit-baseline": FitConfig(epochs=15, learning_rate=0.002, batch_size=128, seed=0),
}


def _config(name: str, args: argparse.Namespace) -> FitConfig:
    return replace(DEFAULTS[name], epochs=args.epochs or DEFAULTS[name].epochs, seed=args.seed)


def train(name: str, args: argparse.Namespace) -> Trained:
    if name == "wine":
        return train_wine(_config("wine", args), **({"train_parties": args.subset} if args.subset else {}))
    if name == "digit-int8":
        return quantise_digit(args.models_dir, args.data_dir, args.cache)
    if name == "spam":
        return train_spam(_config("spam", args), cache=args.cache, subset=args.subset)
    return train_digit(
        _config("digit", args), _config("digit-baseline", args), args.data_dir, args.cache, subset=args.subset
    )


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("model", choices=["wine", "spam", "digit", "digit-int8", "all"])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, help="folder of MNIST IDX files (digit only)")
    parser.add_argument("--cache", type=Path, help="npm data cache (default $NNSERVE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override every model's epoch count")
    parser.add_argument(
        "--subset", type=int, help="train on this many items only (a quick run); the held-out split is kept"
    )
    args = parser.parse_args(argv)
    written = []
    for name in ["wine", "spam", "digit"] if args.model == "all" else [args.model]:
        started = time.perf_counter()
        try:
            trained = train(name, args)
        except DataError as exc:  # data that cannot be had: what is missing and where to get it
            raise SystemExit(f"python -m training {name}: {exc}") from exc
        trained.training["seconds_total"] = round(time.perf_counter() - started, 1)
        written.append(write_model(trained, args.models_dir))
        # held_out.npz and the samples the parity tests replay (mistakes and doubts included).
        samples.write(written[-1], args.cache, args.data_dir)
        shown = {k: v for k, v in trained.metrics.items() if not isinstance(v, (dict, list))}
        print(f"{name}: wrote {written[-1]} in {time.perf_counter() - started:.1f} s; metrics {shown}")
    return written


if __name__ == "__main__":
    main()

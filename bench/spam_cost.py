"""python -m bench.spam_cost: onnxruntime's time per row for each committed spam version, batch 1, one
thread, on the texts of its samples.json as the service encodes them (the model stage alone: no
parsing, no preprocessing). Each text's time is the best of `rounds` means of `repeats` calls (on a
shared machine the best is the least disturbed), and the median over texts is reported. Spam v3's
first layer costs what the text's words cost; v1 and v2's cost what their 10,000-wide vocabulary
costs, whatever the text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.stages import Model
from service.models.loading import spam_encoder

MODELS = Path(__file__).resolve().parents[1] / "models" / "spam"


def per_row_microseconds(folder: Path, repeats: int = 20, rounds: int = 5) -> dict[str, float]:
    model = Model(folder)
    encoder = spam_encoder(model.card)
    texts = [item["input"]["text"] for item in json.loads((folder / "samples.json").read_text())["items"]]
    times = []
    for text in texts:
        feeds = encoder.feeds([encoder.encode(text)])
        model.run(feeds)
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(repeats):
                model.run(feeds)
            best = min(best, (time.perf_counter() - started) / repeats * 1e6)
        times.append(best)
    return {
        "median_us": float(np.median(times)),
        "p90_us": float(np.percentile(times, 90)),
        "texts": len(texts),
    }


def main() -> None:
    for folder in sorted((p for p in MODELS.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        print(f"spam v{folder.name}: {per_row_microseconds(folder)}")


if __name__ == "__main__":
    main()

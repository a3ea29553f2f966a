"""Why the wine network predicts so many bottles: each guest's exact effect, and the hidden layer.

A guest's effect is the bottles for the party as given minus the bottles without that guest, both
from the network itself: the party and each of its one-guest-fewer variants go in one call, so
the effects are exact, not a linear approximation. Rounded as /predict/wine rounds, the effects
are differences of its answers. The hidden layer comes from the version's hidden.onnx (one more
call, for the party alone), each unit next to the meaning the card gives it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from service.dataplane import DataPlane
from service.features import GuestEncoder
from service.models.loading import HiddenGraph, ServingModel

BOTTLE_DECIMALS = 4  # as /predict/wine answers


def _hidden_layer(hidden: HiddenGraph, activations: np.ndarray) -> dict[str, Any]:
    units = [
        {
            "unit": unit.unit,
            "activation": round(float(a), 4),
            "active": bool(a > 0),
            "weight_out": round(unit.weight_out, 4),
            "contribution": round(float(a) * unit.weight_out, 4) if a > 0 else 0.0,
            "meaning": unit.meaning,
        }
        for unit, a in zip(hidden.units.units, activations, strict=True)
    ]
    return {
        "available": True,
        "reason": None,
        "output_bias": round(hidden.units.output_bias, 4),
        "units": units,
    }


async def explain(
    dataplane: DataPlane, model: ServingModel, encoder: GuestEncoder, party: np.ndarray
) -> dict[str, Any]:
    """`party` is the presence vector over the roster, as the route encoded it."""
    present = np.flatnonzero(party)
    rows = np.repeat(party[np.newaxis], 1 + len(present), axis=0)
    rows[np.arange(1, len(rows)), present] = 0.0
    name = model.card.inputs[0].name
    hidden = model.hidden
    if hidden is None:
        outputs = await dataplane.run(model, {name: rows})
        layer: dict[str, Any] = {
            "available": False,
            "reason": model.hidden_error,
            "output_bias": None,
            "units": [],
        }
    else:
        outputs, activations = await asyncio.gather(
            dataplane.run(model, {name: rows}), hidden.runner.run({name: rows[:1]})
        )
        layer = _hidden_layer(hidden, activations[0][0])
    bottles = [round(b, BOTTLE_DECIMALS) for b in outputs[0][:, 0].tolist()]
    guests = [
        {
            "guest": encoder.roster[g],
            "effect": round(bottles[0] - without, BOTTLE_DECIMALS),
            "bottles_without": without,
        }
        for g, without in zip(present.tolist(), bottles[1:], strict=True)
    ]
    return {"bottles": bottles[0], "buy": math.ceil(bottles[0]), "guests": guests, "hidden": layer}

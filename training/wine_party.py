"""The dinner-party story as a ground-truth function, and parties sampled from it.

You host; guests interact. Aunt Agatha stops everyone drinking. Aunt Dahlia drinks a little herself
and makes everyone else drink 2.6 times as much. The Drones Club and Totleigh Towers are feuding:
when both come, the faction with fewer members present leaves (Totleigh on a tie) and drinks
nothing. So bottles are not A x guests, which is why a small ReLU network beats the linear model.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from service.features import GuestEncoder

HOST_BOTTLES = 1.0
DAHLIA_OWN = 0.4
DAHLIA_MULTIPLIER = 2.6
DRINKS = {
    "Stiffy": 0.5,
    "Bertie": 0.7,
    "Bingo": 0.6,
    "Gussie": 0.1,
    "Spode": 0.8,
    "Madeline": 0.3,
    "Watkyn": 0.5,
    "Tuppy": 0.9,
}
DRONES = ("Bertie", "Bingo", "Gussie")
TOTLEIGH = ("Spode", "Madeline", "Watkyn")
ROSTER = ["Agatha", "Dahlia", *DRINKS]

STORY = {
    (): 1.0,
    ("Stiffy",): 1.5,
    ("Dahlia",): 3.0,
    ("Dahlia", "Stiffy"): 4.3,
    ("Agatha",): 0.0,
    ("Agatha", "Dahlia", "Stiffy"): 0.0,
}


def bottles(guests: Iterable[str]) -> float:
    """The true number of bottles a party drinks, you included."""
    present = set(guests)
    if "Agatha" in present:
        return 0.0
    drones = present.intersection(DRONES)
    totleigh = present.intersection(TOTLEIGH)
    if drones and totleigh:
        leaving = totleigh if len(totleigh) <= len(drones) else drones
        present -= leaving
    others = HOST_BOTTLES + sum(DRINKS[g] for g in present if g in DRINKS)
    if "Dahlia" in present:
        return DAHLIA_OWN + DAHLIA_MULTIPLIER * others
    return others


def generate_parties(
    seed: int, count: int, noise: float = 0.03
) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """Guest lists, their presence vectors over ROSTER and noisy bottle labels.

    Each party invites each guest with its own chance (drawn per party) so small and large
    parties are both common; Agatha comes less often, or most labels would be zero.
    """
    rng = np.random.default_rng(seed)
    encoder = GuestEncoder(ROSTER)
    parties, vectors, labels = [], [], []
    for _ in range(count):
        chance = rng.uniform(0.1, 0.7)
        guests = [g for g in ROSTER if rng.random() < (chance / 4 if g == "Agatha" else chance)]
        parties.append(guests)
        vectors.append(encoder.encode(guests))
        labels.append(max(0.0, bottles(guests) + rng.normal(0.0, noise)))
    return parties, np.stack(vectors), np.asarray(labels, dtype=np.float32)

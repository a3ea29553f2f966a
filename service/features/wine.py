"""A guest list as the wine network's input: a presence vector over the card's roster."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from service.features.errors import UnknownGuestError


class GuestEncoder:
    """Encodes a guest list as a presence vector over the model's roster, case-insensitively.

    The lookup table is built once per model so that encoding a request is a dict lookup per guest.
    """

    def __init__(self, roster: Sequence[str]) -> None:
        self.roster = list(roster)
        self._index = {name.casefold(): i for i, name in enumerate(self.roster)}
        if len(self._index) != len(self.roster):
            raise ValueError(f"roster has names that differ only by case: {self.roster}")

    def encode(self, guests: Iterable[str]) -> np.ndarray:
        vector = np.zeros(len(self.roster), dtype=np.float32)
        vector[self._indices(guests)] = 1.0
        return vector

    def _indices(self, guests: Iterable[str]) -> list[int]:
        indices: list[int] = []
        unknown: list[str] = []
        for guest in guests:
            i = self._index.get(guest.strip().casefold())
            if i is None:
                unknown.append(guest)
            else:
                indices.append(i)
        if unknown:
            raise UnknownGuestError(unknown, self.roster)
        return indices

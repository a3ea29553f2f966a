"""The errors preprocessing raises; the service answers each with a 4xx, training never sees them."""

from __future__ import annotations

from collections.abc import Sequence


class FeatureError(ValueError):
    """Input that cannot be turned into a tensor; the service answers it with a 4xx."""


class UnknownGuestError(FeatureError):
    def __init__(self, unknown: Sequence[str], roster: Sequence[str]) -> None:
        self.unknown = list(unknown)
        self.roster = list(roster)
        super().__init__(
            f"unknown guest(s) {', '.join(map(repr, self.unknown))}; known guests: {', '.join(self.roster)}"
        )


class ImageTooLargeError(FeatureError):
    """An image whose declared size exceeds the limit: refused before its pixels are decoded."""

"""The syntax of NNSERVE_TRAFFIC and NNSERVE_SHADOW, checked when the settings are read so that
a typo stops the start with the variable's name. Whether the named models and versions exist is
the model repository's question, asked once it is loaded (service/models/traffic.py)."""

from __future__ import annotations

from collections.abc import Iterator

BUCKETS = 100  # weights are whole percentages


class TrafficError(ValueError):
    """A traffic setting that cannot be applied, with the reason an operator needs."""


def version_number(text: str, where: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and 0 < len(text) <= 9) or int(text) == 0:
        raise TrafficError(f"{where}: {text[:20]!r} is not a version number")
    return int(text)


def checked_weights(name: str, weights: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The weights if they are whole percentages adding up to 100 over distinct versions."""
    versions = [version for version, _ in weights]
    if len(set(versions)) != len(versions):
        raise TrafficError(f"{name}: a version is named twice in {weights}")
    if any(not 0 <= weight <= BUCKETS for _, weight in weights):
        raise TrafficError(f"{name}: each weight is a whole percentage from 0 to 100")
    total = sum(weight for _, weight in weights)
    if total != BUCKETS:
        raise TrafficError(f"{name}: the weights add up to {total}, not 100")
    return tuple(weights)


def _per_model(
    text: str, variable: str, separator: str, between: str, form: str
) -> Iterator[tuple[str, str]]:
    """Each model's part of a setting: (name, what follows `between`), every name once."""
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(separator))):
        name, found, rest = part.partition(between)
        name = name.strip()
        if not found or not name:
            raise TrafficError(f"{variable}: {part!r} is not {form}")
        if name in seen:
            raise TrafficError(f"{variable}: {name} is named twice")
        seen.add(name)
        yield name, rest


def parse_traffic(text: str) -> dict[str, tuple[tuple[int, int], ...]]:
    """`spam=2:90,3:10;digit=1:50,2:50` -> {"spam": ((2, 90), (3, 10)), "digit": ...}."""
    split: dict[str, tuple[tuple[int, int], ...]] = {}
    for name, rest in _per_model(text, "NNSERVE_TRAFFIC", ";", "=", "<model>=<version>:<percent>,..."):
        weights = []
        for pair in rest.split(","):
            version, colon, weight = pair.partition(":")
            weight = weight.strip()
            if not colon or not (weight.isascii() and weight.isdigit() and len(weight) <= 3):
                raise TrafficError(f"NNSERVE_TRAFFIC: {name}: {pair.strip()!r} is not <version>:<percent>")
            weights.append((version_number(version, f"NNSERVE_TRAFFIC: {name}"), int(weight)))
        split[name] = checked_weights(f"NNSERVE_TRAFFIC: {name}", weights)
    return split


def parse_shadow(text: str) -> dict[str, int]:
    """`spam:3,digit:2` -> {"spam": 3, "digit": 2}."""
    return {
        name: version_number(version, f"NNSERVE_SHADOW: {name}")
        for name, version in _per_model(text, "NNSERVE_SHADOW", ",", ":", "<model>:<version>")
    }

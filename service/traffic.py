"""The traffic policy: canary weights and a shadow version per model.

Read at start from NNSERVE_TRAFFIC and NNSERVE_SHADOW, changed while serving through
POST /v2/repository/models/{name}/traffic; the data plane applies it (service/dataplane.py).

- Canary: `spam=2:90,3:10` sends 90% of the requests that name no version to spam v2 and 10% to
  v3; several models are separated by `;`. A request carrying `X-Traffic-Key` lands in a bucket
  by a hash of the key (the same on every replica and after a restart), so one user's requests
  always meet the same version; without the header each request draws its bucket at random.
- Shadow: `spam:3` (several separated by `,`) runs v3 on every request spam answers with another
  version, off the response's path, and counts where the two agree (service/shadow.py). A shadow
  version never answers a request by itself unless it is pinned.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config.py checks the settings' syntax here: keep this module's imports light
    from service.repository import ModelEntry

TRAFFIC_KEY_HEADER = "x-traffic-key"
BUCKETS = 100  # weights are whole percentages


class TrafficError(ValueError):
    """A traffic setting that cannot be applied, with the reason an operator needs."""


@dataclass(frozen=True)
class ModelTraffic:
    """One model's policy: canary weights over versions (whole percentages adding up to 100, in
    the order given) and a shadow version. Either may be absent."""

    weights: tuple[tuple[int, int], ...] = ()
    shadow: int | None = None

    def pick(self, key: str | None) -> int | None:
        """The version for a request with this key (or none: a random draw); None without weights."""
        if not self.weights:
            return None
        bucket = _bucket(key) if key is not None else random.randrange(BUCKETS)
        for version, weight in self.weights:
            if bucket < weight:
                return version
            bucket -= weight
        return self.weights[-1][0]  # unreachable: the weights add up to BUCKETS

    def describe(self) -> dict[str, Any]:
        return {
            "weights": {str(version): weight for version, weight in self.weights} or None,
            "shadow": self.shadow,
        }


def _bucket(key: str) -> int:
    """A stable bucket for a client key: the same in every process (unlike hash()), so a user
    stays on one version across replicas and restarts."""
    digest = hashlib.blake2b(key.encode(errors="replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _version(text: str, where: str) -> int:
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
            weights.append((_version(version, f"NNSERVE_TRAFFIC: {name}"), int(weight)))
        split[name] = checked_weights(f"NNSERVE_TRAFFIC: {name}", weights)
    return split


def from_request(name: str, weights: dict[str, int], shadow: int | None) -> ModelTraffic:
    """A model's policy as the admin API states it: version -> percentage, and a shadow."""
    pairs = [(_version(version, name), weight) for version, weight in weights.items()]
    return ModelTraffic(checked_weights(name, pairs) if pairs else (), shadow)


def parse_shadow(text: str) -> dict[str, int]:
    """`spam:3,digit:2` -> {"spam": 3, "digit": 2}."""
    return {
        name: _version(version, f"NNSERVE_SHADOW: {name}")
        for name, version in _per_model(text, "NNSERVE_SHADOW", ",", ":", "<model>:<version>")
    }


def policy(traffic: str, shadow: str) -> dict[str, ModelTraffic]:
    """Both settings as one policy per model."""
    split, shadows = parse_traffic(traffic), parse_shadow(shadow)
    return {name: ModelTraffic(split.get(name, ()), shadows.get(name)) for name in sorted({*split, *shadows})}


def check(name: str, traffic: ModelTraffic, entry: ModelEntry | None) -> None:
    """Refuses a policy the repository cannot follow: an unknown model or version, a version that
    is not ready, or a shadow that also takes traffic or has nothing to shadow. A shadow may take
    other inputs than the versions it shadows: /predict/* prepare them with its own card, and V2
    tensors it cannot take are counted as incomparable (service/shadow.py)."""
    if entry is None:
        raise TrafficError(f"{name}: no such model")
    named = [version for version, _ in traffic.weights]
    if traffic.shadow is not None:
        named.append(traffic.shadow)
    for version in named:
        found = entry.versions.get(version)
        if found is None:
            raise TrafficError(f"{name}: no version {version} (there are {sorted(entry.versions)})")
        if not found.ready:
            raise TrafficError(f"{name} v{version} is not ready: {found.error}")
    if traffic.shadow is None:
        return
    if traffic.shadow in dict(traffic.weights):
        raise TrafficError(f"{name} v{traffic.shadow} cannot be the shadow and take traffic too")
    others = [v for v in entry.versions.values() if v.ready and v.version != traffic.shadow]
    if not others:
        raise TrafficError(f"{name}: v{traffic.shadow} is the only ready version; it has nothing to shadow")

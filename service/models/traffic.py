"""The traffic policy: canary weights and a shadow version per model.

Read at start from NNSERVE_TRAFFIC and NNSERVE_SHADOW, changed while serving through
POST /v2/repository/models/{name}/traffic; the data plane applies it (service/dataplane/).

- Canary: `spam=2:90,3:10` sends 90% of the requests that name no version to spam v2 and 10% to
  v3; several models are separated by `;`. A request carrying `X-Traffic-Key` lands in a bucket
  by a hash of the key (the same on every replica and after a restart), so one user's requests
  always meet the same version; without the header each request draws its bucket at random.
- Shadow: `spam:3` (several separated by `,`) runs v3 on every request spam answers with another
  version, off the response's path, and counts where the two agree (service/models/shadow.py). A shadow
  version never answers a request by itself unless it is pinned.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.config.traffic import (
    BUCKETS,
    TrafficError,
    checked_weights,
    parse_shadow,
    parse_traffic,
    version_number,
)
from service.errors import quoted

if TYPE_CHECKING:
    from service.models.repository import ModelEntry

TRAFFIC_KEY_HEADER = "x-traffic-key"
TrafficKey = bytes | str
"""A client's traffic key: its bytes as sent (REST), or text as gRPC decoded them (UTF-8)."""


@dataclass(frozen=True)
class ModelTraffic:
    """One model's policy: canary weights over versions (whole percentages adding up to 100, in
    the order given) and a shadow version. Either may be absent."""

    weights: tuple[tuple[int, int], ...] = ()
    shadow: int | None = None

    def pick(self, key: TrafficKey | None) -> int | None:
        """The version for a request with this key (or none: a random draw); None without weights."""
        if not self.weights:
            return None
        bucket = key_bucket(key) if key is not None else random.randrange(BUCKETS)
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


def key_bucket(key: TrafficKey) -> int:
    """A stable bucket for a client key: the same in every process (unlike hash()), so a user
    stays on one version across replicas and restarts. The key's bytes as the client sent them
    pick it, whatever the protocol (issue 30): REST hands them over as they came, and gRPC's
    metadata arrives decoded as UTF-8, which encoding gives back. A plain ASCII key buckets as it
    always did. Changing it (another hash, encoding or modulus) moves every user on the next
    deploy: tests/test_canary_and_shadow.py pins it."""
    raw = key.encode(errors="replace") if isinstance(key, str) else key
    digest = hashlib.blake2b(raw, digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def from_request(name: str, weights: dict[str, int], shadow: int | None) -> ModelTraffic:
    """A model's policy as the admin API states it: version -> percentage, and a shadow."""
    pairs = [(version_number(version, name), weight) for version, weight in weights.items()]
    return ModelTraffic(checked_weights(name, pairs) if pairs else (), shadow)


def policy(traffic: str, shadow: str) -> dict[str, ModelTraffic]:
    """Both settings as one policy per model."""
    split, shadows = parse_traffic(traffic), parse_shadow(shadow)
    return {name: ModelTraffic(split.get(name, ()), shadows.get(name)) for name in sorted({*split, *shadows})}


def check(name: str, traffic: ModelTraffic, entry: ModelEntry | None) -> None:
    """Refuses a policy the repository cannot follow: an unknown model or version, a version that
    is not ready, or a shadow that also takes traffic or has nothing to shadow. A shadow may take
    other inputs than the versions it shadows: /predict/* prepare them with its own card, and V2
    tensors it cannot take are counted as incomparable (service/models/shadow.py)."""
    if entry is None:
        raise TrafficError(f"{quoted(name)}: no such model")
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
